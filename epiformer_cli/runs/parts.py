"""An output file written as chunk parts: resumable, shardable, assembled by whoever finishes last.

A run writing to ``OUT`` keeps its parts in the resumable run folder ``OUT.parts/``
(:class:`~epiformer_cli.runs.folder.ResumableRun`: the settings that decide the results, then
one ``chunk-NNNNNNN-DIGEST.part`` per finished chunk of input records, each its own done-marker).
DIGEST hashes the chunk's input lines, so an edited input never reuses a stale part. A part's first
line holds the chunk's counts (statuses, flags) as JSON, so a resumed run can report them without
reading the rows. Every part ends with the resumable layer's checksum line and is checked when it
is read back (resume, assembly): a damaged part is scored again, with one warning naming it.
Chunks are claimed (:meth:`PartedOutput.claim`, a :class:`~epiformer_cli.runs.claims.Claims` claim) before they are scored, so concurrent runs on one
output share them. Whichever process finds every part present assembles ``OUT`` (under a lock that
dies with its holder, so a run killed while assembling never blocks the next one; a concurrent run
waits for it) and removes the folder; re-running any shard later assembles it too.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from epiformer_cli.io.text_output import text_output
from epiformer_cli.runs.checksums import CorruptPiece, Crc32
from epiformer_cli.runs.folder import ResumableRun

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


class _Damaged(Exception):
    """A part failed its checksum during assembly (it has been removed)."""


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
        self.claims = self.run.claims()
        self.damaged: List[int] = []  # chunks whose part failed its checksum (removed, to be scored again)
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
        counts, _ = self._read(index, digest)
        return counts

    def _read(self, index: int, digest: str):
        """(counts, rows text) of a finished chunk's part, checked against its checksum; (None,
        None) when it is not finished, or was damaged (then removed with one warning)."""
        name = self._name(index, digest)
        if not self.run.is_done(name):
            return None, None
        try:
            text = self.run.read_text(name)
        except CorruptPiece:
            self.run.drop_damaged(name, f"the part of chunk {index + 1}", "it is scored again")
            self.damaged.append(index)
            return None, None
        except FileNotFoundError:  # assembled and removed by another run meanwhile
            return None, None
        first, _, rows = text.partition("\n")
        if not first.startswith(_COUNTS):
            return None, None
        return json.loads(first[len(_COUNTS):]), rows

    def claim(self, index: int):
        """A context manager holding chunk ``index``'s claim: yields False while another live
        process holds it (the lock dies with its holder, so a killed run's claim frees itself)."""
        return self.claims.holding(f"chunk-{index:07d}")

    def write(self, index: int, digest: str, text: str, counts: Dict[str, Dict[str, int]]) -> None:
        """Keep chunk ``index``'s rendered rows (and counts) as a part, atomically."""
        for stale in self.folder.glob(f"chunk-{index:07d}-*.part"):
            stale.unlink()
        self.run.write_text(self._name(index, digest), _COUNTS + json.dumps(counts, sort_keys=True) + "\n" + text)

    def assemble(self, header: str, digests: List[str], checksum: bool = False, keep: bool = False) -> bool:
        """Write ``OUT`` from all parts if every chunk is finished, in the format its name promises
        (``.gz`` BGZF, ``.vcf.gz`` also tabix-indexed, ``.bcf`` BCF: see
        :func:`~epiformer_cli.io.text_output.text_output`); returns whether it did.

        Each part is checked as it is copied: a damaged one is removed (with a warning) and ``OUT``
        is not written, so the caller scores it again. ``checksum`` ends ``OUT`` with the checksum
        line of the resumable layer (over the text before it), for files epiformer reads back.
        ``keep`` leaves the parts folder after assembly (the caller has later steps and removes it
        with :meth:`discard` once they are done; until then a rerun resumes them).
        A concurrent run waits while another assembles, then finds ``OUT`` written."""
        def missing() -> List[int]:
            return [i for i, d in enumerate(digests) if not self.run.is_done(self._name(i, d))]

        absent = missing()
        if absent:
            text = self.run.describe_missing(absent, len(digests), [f"chunk {i + 1}" for i in absent])
            log.info("%s is assembled when every chunk is finished (the last shard to finish does it, or re-run "
                     "any shard then): %s", self.out, text)
            return False
        with self.run.lock("assemble.lock", wait=True) as held:
            if not held or not self.folder.is_dir() or missing():
                return self.out.exists()  # assembled by the run that held the lock before this one
            total = Crc32.of(header.encode())
            try:
                with text_output(self.out) as out:  # atomic: nothing is left if a part is damaged
                    out.write(header)
                    for i, d in enumerate(digests):
                        _, rows = self._read(i, d)
                        if rows is None:
                            raise _Damaged()
                        out.write(rows)
                        if checksum:
                            total.update(rows.encode())
                    if checksum:
                        out.write(total.trailer().decode())
            except _Damaged:
                return False  # the damaged part was removed with a warning: the caller scores it again
            if not keep:
                self.run.discard()
        return True
