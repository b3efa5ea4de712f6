"""score-variants' genome-wide null: reuse a matching null file, or score one, resumably and shared.

The null is scored before the input's rows are written, because every row carries its calibrated
values. Its SNVs go through the input's own scorer in parts of :data:`~epiformer_cli.variants.null.NULL_CHUNK`
(a :class:`~epiformer_cli.runs.parts.PartedOutput` beside the null file), so a killed
run resumes them. Every process that needs the null (shards of a SLURM array, torchrun ranks, a
second run started on the same output) works through the parts it finds unfinished and
unclaimed, starting with its own share, and waits for the ones another live process holds: the
null is computed once, whatever the number of processes, and none of them waits forever for a
shard that is not running.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Dict, List, Optional

from epiformer_cli import __version__
from epiformer_cli.errors import UsageError
from epiformer_cli.io.identity import file_identity
from epiformer_cli.options import ScoreOptions
from epiformer_cli.progress import Progress
from epiformer_cli.runs import FOREIGN, CorruptPiece, PartedOutput, Shard, chunk_digest, plain, reuse_or_replace
from epiformer_cli.variants.calibration import Calibration
from epiformer_cli.runs.space import require_memory
from epiformer_cli.variants.null import (
    NULL_CHUNK, NullTable, draw_null_snvs, header_line, null_key, null_memory_bytes, read_null, read_null_key,
    table_from_text,
)
from epiformer_cli.variants.output import tsv_header, tsv_rows

log = logging.getLogger(__name__)

#: seconds between looks at parts another process is scoring.
POLL_SECONDS = 1.0


def default_null_path(out: Path) -> Path:
    """Where a run writing ``out`` keeps its null when no ``--null`` is given: ``out.null.tsv.gz``."""
    return out.with_name(out.name + ".null.tsv.gz")


def scoring_key(options: ScoreOptions) -> Dict[str, object]:
    """The scoring options a null's values depend on (not the tracks: a null of more tracks serves
    a run on fewer; not the batch size, device or fast path, which change nothing beyond float
    rounding)."""
    inference = options.inference.fingerprint()
    inference.pop("tracks", None)
    return {"inference": inference, "window_mode": options.window_mode, "score_bins": options.score_bins,
            "no_cons": options.no_cons}


def null_calibration(inputs, scorer, tracks: List[str], options: ScoreOptions, out: Optional[Path], shard: Shard,
                     progress: Optional[Progress] = None) -> Optional[Calibration]:
    """The calibration of this run (None with ``--null-size 0``).

    Args:
        inputs: the opened :class:`~epiformer_cli.inference.inputs.ModelInputs`.
        scorer: the run's :class:`~epiformer_cli.variants.scoring.VariantScorer`.
        tracks: the tracks scored.
        out: the output file (None: standard output; the null then stays in memory unless
            ``--null`` names a file).
        shard: this process's share of the work (its null parts are scored first).
        progress: called as ``progress(n, total=size)`` with null SNVs scored.

    Raises:
        UsageError: a null file made for other inputs or options (naming what differs), or one
            without the tracks scored.
    """
    if not options.null_size:
        return None
    key = _key(inputs, options)
    path = Path(options.null_path) if options.null_path else (default_null_path(out) if out is not None else None)
    require_memory(null_memory_bytes(options.null_size, len(tracks), in_memory=path is None),
                   f"the null of {options.null_size:,} SNVs in {len(tracks)} track(s)",
                   "lower --null-size" + (", or keep it in a file (--out FILE or --null FILE)" if path is None else ""))
    table = _reuse(path, key, tracks, options.force) if path is not None else None
    if table is None:
        table = _score(inputs, scorer, tracks, options, key, path, shard, progress)
    calibration = Calibration(table, tracks)
    thin = {t: n for t, n in calibration.sizes().items() if n < options.null_size}
    if thin:
        log.warning("the null has fewer scored SNVs than --null-size on %s: p-values use those",
                    ", ".join(f"{t} ({n:,})" for t, n in thin.items()))
    return calibration


def _key(inputs, options: ScoreOptions) -> Dict[str, object]:
    identities = inputs.identities()
    identities.pop("model_tracks", None)  # the null's tracks are checked against the run's instead
    blacklist = file_identity(options.null_blacklist) if options.null_blacklist else None
    return plain(null_key(identities, scoring_key(options), options.null_size, options.seed, blacklist))


def _assembled(path: Path, key) -> bool:
    """Whether ``path`` holds the finished null of ``key`` (another process may just have written it)."""
    try:
        return path.is_file() and read_null_key(path) == key
    except UsageError:
        return False


def _reuse(path: Path, key, tracks: List[str], force: bool) -> Optional[NullTable]:
    """The null in ``path`` when it is complete and matches; None when it must be scored."""
    if not path.exists():
        return None
    foreign = None
    try:
        found = read_null_key(path)
    except UsageError as exc:
        found, foreign = FOREIGN, str(exc)
    if found != key and PartedOutput.exists_for(path):
        return None  # a run replacing it (--force) left parts: resumed, or refused, by the parts folder
    # a null of the same key is reused even with --force: it holds the values this run would score
    if not reuse_or_replace(path, what="null", found=found, wanted=key, force=force, foreign=foreign,
                            fix="give another --null FILE, or --force to replace it", default="its key",
                            rebuild_on_force=False, replace_foreign=True):
        return None
    try:
        table = read_null(path)
    except CorruptPiece as exc:
        log.warning("%s: scoring the null again", exc)
        path.unlink(missing_ok=True)
        return None
    missing = [t for t in tracks if t not in table.tracks]
    if missing:
        if not force:
            table.check_tracks(tracks)
        log.warning("replacing the null %s (it lacks tracks %s)", path, ", ".join(missing))
        return None
    log.info("reusing the null of %s SNVs in %s", f"{table.size:,}", path)
    return table


def _score(inputs, scorer, tracks, options: ScoreOptions, key, path: Optional[Path], shard: Shard,
           progress) -> NullTable:
    """Draw and score the null (into ``path``, resumably, or in memory)."""
    blacklist = None
    if options.null_blacklist:
        from epiformer_cli.io.bed import IntervalIndex, read_bed

        blacklist = IntervalIndex(read_bed(options.null_blacklist, inputs.genome.chrom_sizes, unknown="skip"))
    records = draw_null_snvs(inputs.genome, options.null_size, options.seed, blacklist)
    chunks = [records[i:i + NULL_CHUNK] for i in range(0, len(records), NULL_CHUNK)]
    where = f"into {path}" if path is not None else "(kept in memory: --null FILE keeps it for the next VCF)"
    log.info("scoring a genome-wide null of %s random SNVs (seed %d) %s", f"{len(records):,}", options.seed, where)
    advance = progress or (lambda n, total=None: None)
    advance(0, total=len(records))

    def render(chunk) -> str:
        tasks = {(a.record, a.allele): scorer.check(a) for record in chunk for a in record.alleles}
        scorer.score(list(tasks.values()))
        return tsv_rows(chunk, tasks, tracks)

    if path is None:
        text = [tsv_header()]
        for chunk in chunks:
            text.append(render(chunk))
            advance(len(chunk))
        return table_from_text(key, "".join(text))

    parts = PartedOutput(path, {"tool": __version__, "null": key, "tracks": tracks}, force=options.force)
    digests = [chunk_digest(i, [r.line for r in chunk]) for i, chunk in enumerate(chunks)]
    # this process's share first, then whatever is left: every process needing the null helps
    order = [i for i in range(len(chunks)) if shard.owns(i)] + [i for i in range(len(chunks)) if not shard.owns(i)]
    waited = False
    counted = set()
    header = header_line(key) + tsv_header()
    while not _assembled(path, key):
        pending = []
        for i in order:
            if not parts.folder.is_dir() or _assembled(path, key):
                break  # another process assembled the null (and removes the parts)
            if parts.done(i, digests[i]) is not None:
                if i not in counted:
                    counted.add(i)
                    advance(len(chunks[i]))
                continue
            with parts.claim(i) as held:
                if not held:
                    pending.append(i)
                    continue
                if _assembled(path, key):
                    break  # assembled while this process waited for the claim: the parts are going away
                if parts.done(i, digests[i]) is None:
                    parts.write(i, digests[i], render(chunks[i]), {"statuses": {}, "flags": {}})
            if i not in counted:
                counted.add(i)
                advance(len(chunks[i]))
        if pending and parts.folder.is_dir() and not _assembled(path, key):
            if not waited:
                log.info("waiting for another process scoring %d part(s) of the null %s", len(pending), path)
                waited = True
            time.sleep(POLL_SECONDS)
            continue
        # assembly waits for a run assembling it already; it declines when a part was damaged
        # (removed with a warning): the loop then scores that part again
        if _assembled(path, key) or parts.assemble(header, digests, checksum=True):
            break
        if not parts.folder.is_dir():
            parts = PartedOutput(path, {"tool": __version__, "null": key, "tracks": tracks}, force=options.force)
    if parts.folder.is_dir() and not parts.run.settings_path.exists():
        # the assembler removed the folder while this process was creating a claim file in it
        shutil.rmtree(parts.folder, ignore_errors=True)
    return read_null(path)
