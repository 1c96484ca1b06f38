"""The modified dataset and its noise control from a trained m_ψ (paper Sec. 4.5, 5.2):
computed on the fly from the base images, or exported as vaebias dataset files."""

from __future__ import annotations

from pathlib import Path

import torch

from vaebias._internal.config import from_dict, to_dict
from vaebias._internal.errors import ConfigError
from vaebias._internal.io import read_yaml
from vaebias.data import load_dataset
from vaebias.data.base import GroundTruthData
from vaebias.data.variants import Modified, Noisy, export_dataset
from vaebias.manipulation.field import ManipulationConfig, load_field
from vaebias.training import resolve_device

__all__ = ["VARIANT_KINDS", "export_variants", "load_dataset_spec", "load_variant", "variant_dataset", "variant_paths"]


def variant_paths(out_dir, base_name: str, epsilon: float, noise_seed: int,
                  noise: str = "uniform") -> dict[str, Path]:
    """File names of the exported variants: ``<name>_modified_eps<ε>.h5`` and
    ``<name>_noise_eps<ε>_seed<s>.h5`` (``<name>_signnoise_...`` for the sign control)."""
    out_dir = Path(out_dir)
    kind = "noise" if noise == "uniform" else f"{noise}noise"
    return {
        "modified": out_dir / f"{base_name}_modified_eps{epsilon:g}.h5",
        "noise": out_dir / f"{base_name}_{kind}_eps{epsilon:g}_seed{noise_seed}.h5",
    }


def variant_dataset(base: GroundTruthData, kind: str, manipulation_dir, device="cpu") -> GroundTruthData:
    """The modified dataset x + ε·m_ψ(w) (``kind="modified"``) or its noise control
    (``"noise"``: x + U[−ε, ε] fixed per image, or the sign control when the m_ψ run's
    ``noise`` is ``"sign"``; ``"sign_noise"``: x ± ε always) of a trained m_ψ,
    computed on the fly from ``base``'s images (paper Sec. 4.5, 5.2) with ε, clipping
    and the noise seed of the manipulation's config.

    The images equal those of :func:`export_variants` before the export's rounding to
    1/255 steps (|difference| ≤ 1/255), without the file (5.9 GB per variant for
    Shapes3D). What :func:`load_variant` returns.

    Raises:
        RunError: no finished manipulation run in ``manipulation_dir``.
        ConfigError: an unknown ``kind``, or a base whose factor grid is not the one m_ψ
            was trained on.
    """
    if kind not in VARIANT_KINDS:
        raise ConfigError(f"variant = {kind!r}: expected one of {', '.join(map(repr, VARIANT_KINDS))}")
    field, cfg = load_field(manipulation_dir, device)
    info = read_yaml(Path(manipulation_dir) / "config.yaml")["dataset_info"]
    if list(info["factor_sizes"]) != list(base.factor_sizes) or \
            list(info["observation_shape"]) != list(base.observation_shape):
        raise ConfigError(f"the m_psi in {str(manipulation_dir)!r} was trained on {info['name']!r} (factor sizes "
                          f"{info['factor_sizes']}, images {info['observation_shape']}), not on {base.name!r} "
                          f"({list(base.factor_sizes)}, {list(base.observation_shape)})")
    if kind == "modified":
        field = field.to(memory_format=torch.channels_last)  # 1.7x faster transposed convs on CPU
        return Modified(base, field, cfg.epsilon, clip=cfg.clip, name=f"{base.name}_modified")
    if kind == "sign_noise":  # the strongest control the bound allows, whatever the m_psi run's noise
        return Noisy(base, cfg.epsilon, seed=cfg.noise_seed, clip=cfg.clip, name=f"{base.name}_signnoise",
                     distribution="sign")
    return Noisy(base, cfg.epsilon, seed=cfg.noise_seed, clip=cfg.clip, name=f"{base.name}_noise",
                 distribution=cfg.noise)


#: the on-the-fly variants of :func:`load_variant`
VARIANT_KINDS = ("modified", "noise", "sign_noise")


def load_variant(name, *, variant: str, manipulation=None, noise_epsilon: float | None = None,
                 noise_seed: int = 0, **kwargs) -> GroundTruthData:
    """``load_dataset(name, **kwargs)`` altered by a trained m_ψ: the paper's modified
    dataset (``variant="modified"``) or its noise control (``"noise"``, ``"sign_noise"``),
    computed on the fly (:func:`variant_dataset`; no exported file needed). A noise control
    without an m_ψ takes ``noise_epsilon`` (and ``noise_seed``) instead.

    Args:
        name, kwargs: what :func:`vaebias.data.load_dataset` takes.
        variant: ``"modified"``, ``"noise"`` or ``"sign_noise"``.
        manipulation: the folder of a finished m_ψ run.
        noise_epsilon, noise_seed: a noise control without an m_ψ: x + U[−ε, ε] (``"noise"``)
            or x ± ε (``"sign_noise"``), fixed per image, clipped to [0, 1].

    Raises:
        ConfigError: an unknown ``variant``, or neither ``manipulation`` nor (for noise)
            ``noise_epsilon``; see also :func:`variant_dataset` and :func:`vaebias.data.load_dataset`.
    """
    if variant not in VARIANT_KINDS:
        raise ConfigError(f"variant = {variant!r}: expected one of {', '.join(map(repr, VARIANT_KINDS))} "
                          f"(with manipulation = the folder of a trained m_psi)")
    if manipulation is None and noise_epsilon is not None and variant != "modified":
        base = load_dataset(name, **kwargs)
        sign = variant == "sign_noise"
        return Noisy(base, noise_epsilon, seed=noise_seed, distribution="sign" if sign else "uniform",
                     name=f"{base.name}_{'signnoise' if sign else 'noise'}")
    if manipulation is None:
        raise ConfigError(f"variant = {variant!r} needs manipulation = the folder of a trained m_psi"
                          + ("" if variant == "modified" else " (or noise_epsilon)"))
    return variant_dataset(load_dataset(name, **kwargs), variant, manipulation)


def load_dataset_spec(spec: dict) -> GroundTruthData:
    """The dataset of a run spec's ``dataset`` entry: :func:`vaebias.data.load_dataset`'s
    keyword arguments, or with ``variant`` and ``manipulation`` those of :func:`load_variant`."""
    if spec.get("variant") is not None or spec.get("manipulation") is not None:
        return load_variant(**spec)
    return load_dataset(**{k: v for k, v in spec.items() if k not in ("variant", "manipulation", "noise_epsilon",
                                                                      "noise_seed")})


def export_variants(base: GroundTruthData, manipulation_dir, out_dir, *, device="auto",
                    progress: bool = True, chunk: int = 4096) -> dict[str, Path]:
    """Write the modified dataset (x + ε·m_ψ(w)) and the noise control (x + U[−ε, ε],
    fixed per image) for every image of ``base``, in its order, as vaebias dataset
    files (see :mod:`vaebias.data.variants`). Finished files are kept; an interrupted
    export resumes.

    Returns:
        ``{"modified": path, "noise": path}``.
    """
    dev = resolve_device(device)
    cfg = from_dict(ManipulationConfig, read_yaml(Path(manipulation_dir) / "config.yaml")["manipulation"])
    paths = variant_paths(out_dir, base.name, cfg.epsilon, cfg.noise_seed, cfg.noise)
    prov = {"base": base.describe(), "manipulation_dir": str(Path(manipulation_dir).resolve()),
            "manipulation": to_dict(cfg)}
    modified = variant_dataset(base, "modified", manipulation_dir, dev)
    export_dataset(modified, paths["modified"], kind="modified", base=base, epsilon=cfg.epsilon,
                   provenance=prov, device=dev, progress=progress, chunk=chunk)
    noisy = variant_dataset(base, "noise", manipulation_dir, dev)
    export_dataset(noisy, paths["noise"], kind="noise", base=base, epsilon=cfg.epsilon,
                   provenance={**prov, "noise_seed": cfg.noise_seed}, device=dev,
                   progress=progress, chunk=chunk)
    return paths


