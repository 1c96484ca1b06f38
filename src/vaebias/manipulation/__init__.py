"""The paper's dataset manipulation (Sec. 4.3-5.2): the two reference models, the field
m_ψ(w) trained so that x' = x + ε·m_ψ(w) is entangled for the VAE family, its health
check, and the modified and noise-control datasets (on the fly or exported)."""

from vaebias.manipulation.export import (
    VARIANT_KINDS,
    export_variants,
    load_dataset_spec,
    load_variant,
    variant_dataset,
    variant_paths,
)
from vaebias.manipulation.field import (
    HEALTH_LIMITS,
    ManipulationConfig,
    ManipulationField,
    Manipulator,
    field_health,
    load_field,
    train_manipulation,
)
from vaebias.manipulation.references import dct_rotation, rotate_reference, select_references

__all__ = ["HEALTH_LIMITS", "VARIANT_KINDS", "ManipulationConfig", "ManipulationField", "Manipulator", "dct_rotation",
           "export_variants", "field_health", "load_dataset_spec", "load_field", "load_variant", "rotate_reference", "select_references",
           "train_manipulation", "variant_dataset", "variant_paths"]
