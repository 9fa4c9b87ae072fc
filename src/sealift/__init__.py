"""sealift: move container images between hosts without a registry."""

__version__ = "0.1.0"
