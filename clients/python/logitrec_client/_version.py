"""The client's version: one place, read by pyproject.toml and the user agent."""

__version__ = "0.1.0"
