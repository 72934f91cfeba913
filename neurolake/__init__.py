"""neurolake's top: the CLI, the demo and the lake API. Nothing below imports it."""

from core import __version__

__all__ = ["__version__"]
