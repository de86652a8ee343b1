"""Image-editing benchmark harness: edit with a diffusers pipeline, judge with a Qwen-VL model, report."""

from .config import BenchmarkConfig, ConfigError, config_from_dict, parse_config
from .runner import run

__all__ = ["BenchmarkConfig", "ConfigError", "config_from_dict", "parse_config", "run"]
