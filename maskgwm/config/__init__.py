"""Run configuration: dataclasses (schema), the paper's stages, scales and named variants."""
from .resolve import (PARENT_STAGE, SCALES, STAGES, resolve_run_config, variant_description,
                      variant_names)
from .schema import ConfigError, RunConfig, content_hash, to_dict

__all__ = ["ConfigError", "PARENT_STAGE", "RunConfig", "SCALES", "STAGES", "content_hash",
           "resolve_run_config", "to_dict", "variant_description", "variant_names"]
