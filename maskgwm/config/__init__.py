"""Run configuration: dataclasses (schema), the paper's stages, scales and named variants."""
from .resolve import PARENT_STAGE, STAGES, resolve_run_config, variant_description, variant_names
from .scales import SCALES, Scale, get_scale
from .schema import ConfigError, RunConfig, content_hash, to_dict

__all__ = ["ConfigError", "PARENT_STAGE", "RunConfig", "SCALES", "STAGES", "Scale",
           "content_hash", "get_scale", "resolve_run_config", "to_dict", "variant_description",
           "variant_names"]
