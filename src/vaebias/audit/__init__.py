"""Audits of your own data and models for the local-alignment bias of the paper (Zietlow et
al. 2021): :mod:`vaebias.audit.data` (model-free: does the data's local variance line up with
its factors?) and :mod:`vaebias.audit.model` (does a training recipe rely on it?)."""

from vaebias.audit.data import (
    alignment_from_gram,
    audit_dataset,
    audit_datasets,
    audit_table,
    local_alignment,
    local_gram,
    rank_correlation,
    systematic_shift,
    write_dataset_audit,
)

__all__ = ["alignment_from_gram", "audit_dataset", "audit_datasets", "audit_table", "local_alignment", "local_gram",
           "rank_correlation", "systematic_shift", "write_dataset_audit"]
