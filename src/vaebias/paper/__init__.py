"""The paper's results, one module each: :mod:`~vaebias.paper.reproduce` (Table 1 and the
whole study from a profile), :mod:`~vaebias.paper.fig1`, :mod:`~vaebias.paper.fig5`
(robustness over the primary hyperparameter) and :mod:`~vaebias.paper.theorem1`."""

from vaebias.paper.profile import TABLE1_MODELS, VARIANTS, Profile, load_profile, profiles
from vaebias.paper.reproduce import reproduce

__all__ = ["TABLE1_MODELS", "VARIANTS", "Profile", "load_profile", "profiles", "reproduce"]
