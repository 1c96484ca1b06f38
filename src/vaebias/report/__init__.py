"""Tables, figures, traversals and the HTML page of a results folder. The report reads run
directories only, never live objects."""

from vaebias.report.figures import new_figure, save_figure
from vaebias.report.html import write_html_report
from vaebias.report.statistics import bootstrap_ci, difference, permutation_p_value
from vaebias.report.tables import (
    collect_runs,
    drops,
    summarise,
    write_report,
)
from vaebias.report.traversal import decoder_of, traversal_grid, write_traversal

__all__ = ["bootstrap_ci", "collect_runs", "decoder_of", "difference", "drops",
           "new_figure", "permutation_p_value", "save_figure", "summarise", "traversal_grid", "write_html_report",
           "write_report", "write_traversal"]
