"""The one exception family the core raises for anything a user can fix.

The command-line face turns an :class:`EpiformerError` into one line on stderr and the error's
``exit_code``; notebooks get a normal exception with the same message. Messages say what went wrong,
name the file, and say what to do about it.
"""

from __future__ import annotations


class EpiformerError(Exception):
    """Base class: a problem with the user's input, files or environment (not a bug).

    Attributes:
        exit_code: the process exit code the CLI uses (1 runtime error, 2 usage error).
    """

    exit_code = 1


class UsageError(EpiformerError):
    """An option or combination of options that cannot work (exit code 2)."""

    exit_code = 2


class InputFileError(EpiformerError):
    """An input file is missing, unreadable or not in the expected format."""


class ChromosomeMismatchError(InputFileError):
    """Two files share no chromosome names, even after alias resolution."""


class ModelFileError(InputFileError):
    """A model file is missing, truncated, of another format version, or unsafe to load."""


class StorageError(EpiformerError):
    """The machine, not the input: a full disk, a quota, a file-size limit, a read-only folder,
    or a stored piece that fails its checksum. The message names the path, what ran out and what
    to do; the same command resumes once the fault is removed (exit code 1)."""


class DeviceError(EpiformerError):
    """The requested compute device or precision is not available here."""
