"""Errors of the infra package."""


class InfraError(RuntimeError):
    """A service could not be installed, started or reached; the message says what to do."""
