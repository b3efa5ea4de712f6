"""The free-space pre-check of a run: refuse before any work what cannot fit on the disk."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from epiformer_cli.io.faults import require_free_space


def require_room(folder: str | Path, sizes: Sequence[int], what: str) -> None:
    """Refuse, before any work, files of ``sizes`` bytes that cannot all fit in ``folder``, or one
    of which is over the file-size limit (``ulimit -f``).

    Args:
        folder: where they will be written (an existing folder, or one to be created: its nearest
            existing parent is checked).
        sizes: the bytes of each file still to write (exact, or a low estimate: the check must never
            refuse what would fit).
        what: what they are, for the message ("the prediction store X").

    Raises:
        StorageError: naming the bytes needed and free, and the fix.
    """
    require_free_space(Path(folder), int(sum(sizes)), what, int(max(sizes, default=0)))
