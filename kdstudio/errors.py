"""Errors a user can act on. The CLI prints them as one message, never a traceback."""

from __future__ import annotations


class KdError(Exception):
    """Base of every error that carries a message meant for the user, with the fix when there is one."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message}\nFix: {self.fix}" if self.fix else self.message


class ProjectNotFound(KdError):
    pass


class ProjectLocked(KdError):
    pass


class SchemaError(KdError):
    pass


class ImportFailed(KdError):
    """A file could not be imported; the project is left exactly as it was."""


class ConfigError(KdError):
    pass


class PluginNotFound(KdError):
    pass


class MissingPackage(KdError):
    pass
