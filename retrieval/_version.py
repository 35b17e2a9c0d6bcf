"""The package version, in a module of its own so that any module may import it without
importing the package `__init__` (which lazily imports `api`: an upward arrow)."""

__version__ = "0.1.0"
