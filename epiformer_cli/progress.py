"""The one progress-callback shape of every job, the trainer and the demo generator.

A job that reports progress takes ``progress: Optional[Progress]`` and calls it as
``progress(advance, total=..., **status)``:

* ``advance``: units done since the last call (windows, bases, records, mutants, steps; 0 to only
  set the total or the status);
* ``total``: the number of units of the whole job, given (or corrected) whenever it is known;
* ``status``: named values worth showing beside the bar (``loss=0.41``, ``stage="tracks"``).

The command line passes a progress bar (``cli/common.py``); a notebook passes its own function or
nothing. A leaf module: it imports nothing of epiformer.
"""

from __future__ import annotations

from typing import Any, Optional, Protocol


class Progress(Protocol):
    """``progress(advance=1, total=None, **status)``: see the module docstring."""

    def __call__(self, advance: float = 1, total: Optional[float] = None, **status: Any) -> None: ...


def silent(advance: float = 1, total: Optional[float] = None, **status: Any) -> None:
    """A :class:`Progress` that shows nothing."""


def or_silent(progress: Optional[Progress]) -> Progress:
    """``progress``, or :func:`silent` when there is none (so callers need no ``if progress``)."""
    return silent if progress is None else progress
