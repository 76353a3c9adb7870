"""Model manifests (one TOML file per model) and conversion scripts; installed as streamst.models."""
