"""neurolake: the shared core (settings, CLI, logging). Kept small: edge Pis import it too."""

__version__ = "0.1.0"
