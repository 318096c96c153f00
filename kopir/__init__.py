"""kopir: the application (CLI, config, the ``kopir run`` job)."""

from kopir.config import Config, ConfigError, Duration, load_config

__all__ = ["Config", "ConfigError", "Duration", "load_config"]
