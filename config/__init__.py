"""Node settings: models and loading from TOML and the environment."""
