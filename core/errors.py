"""Errors a person can act on: the CLI prints them as one line and exits 2."""


class NeurolakeError(Exception):
    """A problem with input or environment that the user can fix; the message says how."""

    exit_code = 2


class SettingsError(NeurolakeError):
    """A setting is unknown, malformed or out of range."""


class ServiceError(NeurolakeError):
    """A service of the embedded stack could not start, stop or be reached."""
