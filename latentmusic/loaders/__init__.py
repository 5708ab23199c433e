"""Loaders: what pipelines can load on top of their saved models (LoRA adapters)."""

from .lora import (
    DEFAULT_TARGET_MODULES,
    MusicLoraLoaderMixin,
    check_lora_fits,
    default_target_modules,
    get_lora_layers,
    make_lora_config,
    read_lora_file,
)

__all__ = [
    "DEFAULT_TARGET_MODULES",
    "MusicLoraLoaderMixin",
    "check_lora_fits",
    "default_target_modules",
    "get_lora_layers",
    "make_lora_config",
    "read_lora_file",
]
