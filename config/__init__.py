"""Node settings: models and loading from TOML and the environment."""

from config.loading import ConfigError, load_config, parse_config
from config.models import NodeConfig

__all__ = ["ConfigError", "NodeConfig", "load_config", "parse_config"]
