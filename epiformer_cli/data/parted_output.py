"""An output file written as chunk parts: resumable, shardable, assembled by whoever finishes last.

A run writing to ``OUT`` keeps its parts in the resumable run folder ``OUT.parts/``
(:class:`~epiformer_cli.data.resumable.ResumableRun`: the settings that decide the results, then
one ``chunk-NNNNNNN-DIGEST.part`` per finished chunk of input records, each its own done-marker).
DIGEST hashes the chunk's input lines, so an edited input never reuses a stale part. A part's first
line holds the chunk's counts (statuses, flags) as JSON, so a resumed run can report them without
reading the rows. Whichever process finds every part present assembles ``OUT`` (under a lock that
dies with its holder, so a run killed while assembling never blocks the next one) and removes the
folder; re-running any shard later assembles it too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from epiformer_cli.data.resumable import ResumableRun
from epiformer_cli.io.text_output import text_output

log = logging.getLogger(__name__)

KIND = "epiformer-parts"
FORMAT_VERSION = 1
_COUNTS = "#counts "


def chunk_digest(index: int, lines: List[str]) -> str:
    """A short hash of a chunk's position and input lines (a changed input gets new parts)."""
    h = hashlib.sha1(str(index).encode())
    for line in lines:
        h.update(line.encode())
    return h.hexdigest()[:12]


class PartedOutput:
    """The parts folder ``OUT.parts`` of one output file.

    Args:
        out: the output file the parts assemble into.
        settings: everything the parts' contents depend on (options + input identities).
        force: discard parts of a run with other settings (otherwise refused, naming them).
    """

    def __init__(self, out: Path, settings: Mapping[str, Any], force: bool = False) -> None:
        self.out = Path(out)
        self.run = ResumableRun(self.out.with_name(self.out.name + ".parts"), kind=KIND, format_version=FORMAT_VERSION,
                                settings=settings, what="parts folder", force=force,
                                owned=("assemble.lock",),
                                fix="run the same command to resume, or --force to discard the parts")
        self.folder = self.run.root
        if self.run.resumed:
            log.info("resuming: reusing finished chunks in %s", self.folder)

    @staticmethod
    def exists_for(out: Path) -> bool:
        """Whether ``out`` has a parts folder (a run to resume)."""
        return Path(out).with_name(Path(out).name + ".parts").is_dir()

    def discard(self) -> None:
        """Remove the parts folder (a run that will not be resumed)."""
        self.run.discard()

    @staticmethod
    def _name(index: int, digest: str) -> str:
        return f"chunk-{index:07d}-{digest}.part"

    def done(self, index: int, digest: str) -> Optional[Dict[str, Dict[str, int]]]:
        """The counts of a finished chunk, or None if it is not finished."""
        path = self.run.path(self._name(index, digest))
        if not path.is_file():
            return None
        with open(path) as handle:
            first = handle.readline()
        return json.loads(first[len(_COUNTS):]) if first.startswith(_COUNTS) else None

    def claim(self, index: int):
        """A context manager holding chunk ``index``'s claim: yields False while another live
        process holds it (the lock dies with its holder, so a killed run's claim frees itself)."""
        return self.run.lock(f"claim-{index:07d}.lock")

    def write(self, index: int, digest: str, text: str, counts: Dict[str, Dict[str, int]]) -> None:
        """Keep chunk ``index``'s rendered rows (and counts) as a part, atomically."""
        for stale in self.folder.glob(f"chunk-{index:07d}-*.part"):
            stale.unlink()
        self.run.write_text(self._name(index, digest), _COUNTS + json.dumps(counts, sort_keys=True) + "\n" + text)

    def assemble(self, header: str, digests: List[str]) -> bool:
        """Write ``OUT`` from all parts if every chunk is finished, in the format its name promises
        (``.gz`` BGZF, ``.vcf.gz`` also tabix-indexed, ``.bcf`` BCF: see
        :func:`~epiformer_cli.io.text_output.text_output`); returns whether it did."""
        def missing() -> List[int]:
            return [i for i, d in enumerate(digests) if not self.run.is_done(self._name(i, d))]

        absent = missing()
        if absent:
            text = self.run.describe_missing(absent, len(digests), [f"chunk {i + 1}" for i in absent])
            log.info("%s is assembled when every chunk is finished (the last shard to finish does it, or re-run "
                     "any shard then): %s", self.out, text)
            return False
        with self.run.lock("assemble.lock") as held:
            if not held:
                if not self.folder.is_dir():
                    return self.out.exists()  # another shard has just assembled it
                log.info("another shard is assembling %s", self.out)
                return False
            if not self.folder.is_dir() or missing():
                return self.out.exists()  # assembled by the shard that held the lock before this one
            with text_output(self.out) as out:
                out.write(header)
                for i, d in enumerate(digests):
                    with open(self.run.path(self._name(i, d))) as part:
                        part.readline()  # the counts line
                        shutil.copyfileobj(part, out, 1 << 20)
            self.run.discard()
        return True
