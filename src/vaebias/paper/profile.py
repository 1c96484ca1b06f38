"""A profile: the sizes of one reproduction of the paper's study (restarts, steps, seeds,
models, widths, ...), built in (``quick``, ``laptop``, ``standard``, ``paper``, ``demo``) or
read from a YAML file."""

from __future__ import annotations

import dataclasses
import math
import os
from importlib import resources
from pathlib import Path

from vaebias._internal.config import TrainConfig, check, from_dict
from vaebias._internal.errors import ConfigError
from vaebias._internal.io import (
    read_yaml,
)
from vaebias.manipulation.field import ManipulationConfig
from vaebias.models import get_model_class, primary_hyperparameters, table1_models
from vaebias.paper.fig5 import SCALES

__all__ = ["ENTANGLED_REFERENCES", "Profile", "TABLE1_MODELS", "VARIANTS", "load_profile", "profiles", "read_yaml_text"]

ENTANGLED_REFERENCES = ("restart", "rotated")
VARIANTS = ("original", "modified", "noise")
#: the seven rows of the paper's Table 1
TABLE1_MODELS = table1_models()


@dataclasses.dataclass
class Profile:
    """Sizes of one reproduction.

    Attributes:
        name: profile name (recorded in every table).
        reduced: True when smaller than the paper's protocol (said in outputs).
        reference_restarts: R, β-VAE restarts to pick the references from (>= 2).
        reference_steps, manipulation_steps, train_steps: optimisation steps (> 0).
        seeds: training seeds of every (model, variant) cell.
        models: registered model names (Table 1 rows).
        model_steps: per-model overrides of ``train_steps`` (e.g. the weakly supervised
            GAN's 500,000 steps in Shu et al. 2020).
        model_params: per-model hyperparameter overrides (the models' per-dataset
            defaults apply otherwise).
        eval_points: points for MIG / active units (10,000 in disentanglement_lib).
        batch_size: batch of every stage (64).
        field_width: channel multiplier of m_ψ (see ManipulationConfig).
        checkpoint_every: steps between checkpoints.
        lr: Adam's learning rate in every stage (1e-4, disentanglement_lib's).
        train_settings: further :class:`~vaebias._internal.config.TrainConfig` fields of every
            stage, e.g. the fast step's ``{precision: bf16, channels_last: true,
            fused_adam: true, data_parallel: 0}``.
        entangled_reference: "restart" (the paper, Sec. 4.4: the lowest-MIG restart)
            or "rotated": the highest-MIG restart with its latent space rotated
            (:func:`vaebias.manipulation.references.rotate_reference`), for datasets on which
            every restart disentangles.
        manipulation: :class:`~vaebias.manipulation.field.ManipulationConfig` fields for
            m_ψ and the noise control (``epsilon``, ``loss``, ``clip``, ``clip_in_objective``,
            ``decoder_lr``, ``noise_seed``, ``noise``); unset ones keep their defaults, ε the
            dataset's (``GroundTruthData.epsilon``).
        robustness: Fig. 5's line search (Sec. 5.3), run after the table when set (None:
            off). A mapping with optional keys ``models`` (default: the profile's models
            with a ``primary_hyperparameter``, :func:`vaebias.models.primary_hyperparameters`), ``scales``
            (factors of each model's value in this profile; default 1/4, 1/2, 1, 2, 4),
            ``seeds`` (restarts per value; default the profile's seeds) and ``variants``
            (default original and modified); ``{}`` takes every default. Scale-1 runs of
            the table's models and seeds are the table's own runs (not retrained). A
            results folder written without it (or with another plan) takes it on a rerun:
            the plan is the one field a folder's profile may change.
        export: write the modified and noise datasets as files under ``datasets/`` (True,
            default) or compute them on the fly from the trained m_ψ (False; no 2 x 5.9 GB
            of Shapes3D files; the images differ from the files' only by the files'
            rounding to 1/255 steps).
        workers: local worker processes of the reference and table runs when the caller
            does not choose (None: 1, in the calling process); each gets cores / workers
            torch threads. Not part of a results folder's identity.
    """

    name: str
    reduced: bool = True
    reference_restarts: int = 3
    reference_steps: int = 1000
    manipulation_steps: int = 500
    train_steps: int = 1000
    seeds: tuple[int, ...] = (0, 1)
    models: tuple[str, ...] = TABLE1_MODELS
    model_steps: dict = dataclasses.field(default_factory=dict)
    model_params: dict = dataclasses.field(default_factory=dict)
    eval_points: int = 10_000
    batch_size: int = 64
    field_width: float = 1.0
    checkpoint_every: int = 1000
    lr: float = 1e-4
    train_settings: dict = dataclasses.field(default_factory=dict)
    entangled_reference: str = "restart"
    manipulation: dict = dataclasses.field(default_factory=dict)
    robustness: dict | None = None
    export: bool = True
    workers: int | None = None

    def __post_init__(self):

        check(self.reference_restarts >= 2, "reference_restarts", self.reference_restarts, "an integer >= 2")
        for key in ("reference_steps", "manipulation_steps", "train_steps", "eval_points",
                    "batch_size", "checkpoint_every"):
            check(getattr(self, key) > 0, key, getattr(self, key), "an integer > 0")
        check(len(self.seeds) >= 1, "seeds", self.seeds, "at least one seed")
        check(len(self.models) >= 1, "models", self.models, "at least one model")
        for m in self.models:
            get_model_class(m)
        for m, steps in self.model_steps.items():
            check(m in self.models, f"model_steps.{m}", steps, f"a model of this profile ({', '.join(self.models)})")
            check(isinstance(steps, int) and steps > 0, f"model_steps.{m}", steps, "an integer > 0")
        check(self.lr > 0, "lr", self.lr, "a number > 0")
        check(isinstance(self.export, bool), "export", self.export, "true or false")
        check(self.workers is None or (isinstance(self.workers, int) and not isinstance(self.workers, bool)
                                       and self.workers >= 1), "workers", self.workers, "an integer >= 1 or null")
        check(self.entangled_reference in ENTANGLED_REFERENCES, "entangled_reference", self.entangled_reference,
              " or ".join(repr(e) for e in ENTANGLED_REFERENCES))
        fixed = {"steps", "batch_size", "seed", "device", "checkpoint_every", "log_every", "lr"}
        known = {f.name for f in dataclasses.fields(TrainConfig)} - fixed
        for key in self.train_settings:
            check(key in known, f"train_settings.{key}", self.train_settings[key],
                  f"one of {', '.join(sorted(known))} (the others are set by the profile)")
        TrainConfig(**self.train_settings)  # validates the values

        allowed = {f.name for f in dataclasses.fields(ManipulationConfig)} - {"field_width"}
        for key in self.manipulation:
            check(key in allowed, f"manipulation.{key}", self.manipulation[key],
                  f"one of {', '.join(sorted(allowed))} (field_width is a profile field)")
        ManipulationConfig(**self.manipulation)  # validates the values
        for m, params in self.model_params.items():
            check(m in self.models, f"model_params.{m}", params, f"a model of this profile ({', '.join(self.models)})")
            check(isinstance(params, dict), f"model_params.{m}", params, "a mapping of hyperparameters")
        if self.robustness is not None:
            self.robustness_plan()  # validates

    def robustness_plan(self) -> dict:
        """The line search of :attr:`robustness` with its defaults filled in:
        ``{"models", "scales", "seeds", "variants"}`` (lists).

        Raises:
            ConfigError: an unknown key, a model without a primary hyperparameter, a scale
                that is not a finite number > 0, no seed, or an unknown variant.
        """

        r = dict(self.robustness or {})
        allowed = ("models", "scales", "seeds", "variants")
        for key in r:
            check(key in allowed, f"robustness.{key}", r[key], f"one of {', '.join(allowed)}")
        primary = primary_hyperparameters()
        models = list(r.get("models") or [m for m in self.models if m in primary])
        check(bool(models), "robustness.models", r.get("models", list(self.models)),
              f"at least one model with a primary hyperparameter ({', '.join(sorted(primary))})")
        for m in models:
            check(m in primary, "robustness.models", m,
                  f"a model with a primary hyperparameter ({', '.join(sorted(primary))})")
        scales = list(r.get("scales", SCALES))
        check(bool(scales) and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                                   and x > 0 for x in scales) and len({float(x) for x in scales}) == len(scales),
              "robustness.scales", scales, "a non-empty list of distinct finite numbers > 0")
        seeds = list(r.get("seeds", self.seeds))
        check(bool(seeds) and all(isinstance(x, int) and not isinstance(x, bool) for x in seeds)
              and len(set(seeds)) == len(seeds), "robustness.seeds", seeds, "a non-empty list of distinct integers")
        variants = list(r.get("variants", ("original", "modified")))
        check(bool(variants) and all(v in VARIANTS for v in variants) and len(set(variants)) == len(variants),
              "robustness.variants", variants, f"distinct names among {', '.join(VARIANTS)}")
        return {"models": models, "scales": [float(x) for x in scales], "seeds": seeds, "variants": variants}

    def steps_of(self, model: str) -> int:
        """Training steps of ``model`` in the table runs."""
        return int(self.model_steps.get(model, self.train_steps))


def profiles() -> list[str]:
    """Names of the built-in profiles."""
    return sorted(p.name[:-5] for p in resources.files("vaebias.paper.profiles").iterdir()
                  if p.name.endswith(".yaml"))


def load_profile(name_or_path: str | os.PathLike, **overrides) -> Profile:
    """A built-in profile by name, or a profile YAML file by path, with overrides.

    Raises:
        ConfigError: an unknown profile name (listing the built-in ones), or a bad key
            or value in the file or the overrides.
    """
    name = os.fspath(name_or_path)
    if name in profiles():
        data = read_yaml_text(resources.files("vaebias.paper.profiles").joinpath(f"{name}.yaml").read_text())
    elif Path(name).is_file():
        data = read_yaml(name)
    else:
        raise ConfigError(f"unknown profile {name!r}; built-in profiles: {', '.join(profiles())}, "
                          f"or the path of a profile YAML file")
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise ConfigError(f"profile {name!r} holds {type(data).__name__ if not isinstance(data, dict) else 'no name'}"
                          f"; expected a mapping of Profile fields with at least 'name' (see `vaebias profiles`)")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return from_dict(Profile, data)


def read_yaml_text(text: str):
    import yaml

    return yaml.safe_load(text)


