"""Typed, strict recipes: the schema (:mod:`.schema`) and how recipes are loaded and saved
(:mod:`.loading`, with the YAML dialect in :mod:`.dialect` and type checks in :mod:`.coercion`)."""

from distilprune.config.loading import (
    RECIPES_DIR,
    USAGE,
    available_recipes,
    find_recipe,
    load_recipe,
    recipe_from_dict,
    recipe_to_dict,
    save_recipe,
)
from distilprune.config.schema import (
    ATTENTION_TARGETS,
    CHOICES,
    BATCH_INVARIANT_INT8_METHODS,
    INT8_METHODS,
    DataConfig,
    DistillConfig,
    ExportConfig,
    PruningConfig,
    Recipe,
    StudentConfig,
    TeacherConfig,
    TrackingConfig,
    TrainConfig,
)
from distilprune.errors import ConfigError

__all__ = [
    "ATTENTION_TARGETS", "CHOICES", "BATCH_INVARIANT_INT8_METHODS", "INT8_METHODS", "RECIPES_DIR", "USAGE", "ConfigError", "DataConfig",
    "DistillConfig", "ExportConfig", "PruningConfig", "Recipe", "StudentConfig", "TeacherConfig",
    "TrackingConfig", "TrainConfig", "available_recipes", "find_recipe", "load_recipe", "recipe_from_dict",
    "recipe_to_dict", "save_recipe",
]
