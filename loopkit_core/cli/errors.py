"""The one place where an error a command raised becomes its `loopkit: error:` line and exit code."""

from __future__ import annotations

from loopkit_core.client import ClientError

USAGE = 2  # the command line itself is wrong: a bad value, a missing confirmation (argparse's own code)
FAILED = 1  # the command could not be done: an unknown project, a refused or unreachable server, a file error


class UsageError(Exception):
    """A value on the command line that argparse accepted but the command cannot use."""


def exit_status(exc: BaseException) -> tuple[int, str] | None:
    """(exit code, message) for an error a command may raise; None for anything else (a bug: its traceback)."""
    # Imported here, not at the top: the client commands never load the store's modules (SQLAlchemy) to start.
    from loopkit_core.operator import UnknownProject
    from loopkit_core.projects import AuthError, Conflict

    if isinstance(exc, UsageError):
        return USAGE, str(exc)
    if isinstance(exc, ClientError):
        return FAILED, str(exc)
    if isinstance(exc, UnknownProject):
        return FAILED, str(exc.args[0])
    if isinstance(exc, AuthError):
        return FAILED, exc.message
    if isinstance(exc, Conflict):
        return FAILED, str(exc)
    if isinstance(exc, ValueError):  # a bad project name, retention period or setting (docs/configuration.md)
        return USAGE, str(exc)
    if isinstance(exc, OSError):  # e.g. a data dir that is a file, or not writable
        return FAILED, str(exc)
    return None
