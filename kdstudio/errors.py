"""Errors a user can act on. The CLI prints them as one message, never a traceback."""

from __future__ import annotations

from kdstudio.secrets import redact


class KdError(Exception):
    """Base of every error that carries a message meant for the user, with the fix when there is one."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        # A message may quote a provider's answer, which may quote the key it was sent: secrets never get further.
        message = redact(message) or ""
        super().__init__(message)
        self.message = message
        self.fix = redact(fix)

    def __str__(self) -> str:
        return f"{self.message}\nFix: {self.fix}" if self.fix else self.message


class ProjectNotFound(KdError):
    pass


class ProjectLocked(KdError):
    """Another process writes the project; `pid` is that process where DuckDB names it."""

    def __init__(self, message: str, fix: str | None = None, pid: int | None = None) -> None:
        super().__init__(message, fix)
        self.pid = pid


class SchemaError(KdError):
    pass


class ReadOnlyProject(KdError):
    """The project's folder or database file cannot be written (permissions, a read-only file system)."""


class ImportFailed(KdError):
    """A file could not be imported; the project is left exactly as it was."""


class ConfigError(KdError):
    pass


class PluginNotFound(KdError):
    pass


class MissingPackage(KdError):
    pass


class RunFailed(KdError):
    """A run that cannot achieve anything: it stops as failed, keeps no student, and never reports success."""


class TeacherFailing(RunFailed):
    """The teacher delivers nothing usable (a missing or refused key, a dead model)."""


class TeacherGuessing(RunFailed):
    """Labels people (or gold) checked show the teacher no better than a guess: the run buys nothing from it."""


class StaleStudent(KdError):
    """A kept student learned from other vectors than the project's encoder makes now."""
