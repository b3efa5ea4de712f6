"""The run layer: what every long job (prepare, predict, export-bigwig, score-variants and its null,
explain, train's run folder) uses to be resumable, shareable and safe to re-run.

* :mod:`~epiformer_cli.runs.destination`: may this output be written here? (outputs never touch
  inputs; reuse, refuse or ``--force`` a finished output; the one "made from other inputs" refusal);
* :mod:`~epiformer_cli.runs.folder`: a run folder of settings and finished pieces
  (:class:`ResumableRun`);
* :mod:`~epiformer_cli.runs.checksums`: the one checksum (CRC-32 + length) of every piece;
* :mod:`~epiformer_cli.runs.claims`: claims on pieces and locks, dying with their holder;
* :mod:`~epiformer_cli.runs.shards`: ``--shard I/N``, SLURM arrays and torchrun ranks;
* :mod:`~epiformer_cli.runs.parts`: an output file written as claimed, checksummed parts;
* :mod:`~epiformer_cli.runs.space`: the free-space pre-check.

It sits above ``io/`` and below the jobs and their science; it knows nothing of models or genomes.
"""

from epiformer_cli.runs.checksums import TRAILER_SIZE, CorruptPiece, Crc32, checked_content, trailer
from epiformer_cli.runs.claims import Claims, RunFinishedElsewhere, exclusive
from epiformer_cli.runs.destination import (
    FOREIGN, STREAMS, check_companion, check_output, check_output_dir, differences, kind, other_inputs, plain,
    remove_finished, replace_or_refuse, reuse_or_replace,
)
from epiformer_cli.runs.folder import ResumableRun, read_settings
from epiformer_cli.runs.parts import PartedOutput, chunk_digest
from epiformer_cli.runs.shards import Placement, Shard, Torchrun, place, resolve_shard, torchrun_rank
from epiformer_cli.runs.space import require_room

__all__ = [
    "TRAILER_SIZE", "CorruptPiece", "Crc32", "checked_content", "trailer",
    "Claims", "RunFinishedElsewhere", "exclusive",
    "FOREIGN", "STREAMS", "check_companion", "kind", "check_output", "check_output_dir", "differences", "other_inputs", "plain", "remove_finished", "replace_or_refuse", "reuse_or_replace",
    "ResumableRun", "read_settings", "PartedOutput", "chunk_digest",
    "Placement", "Shard", "Torchrun", "place", "resolve_shard", "torchrun_rank", "require_room",
]
