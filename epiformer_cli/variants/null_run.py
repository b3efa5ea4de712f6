"""score-variants' genome-wide null: reuse a matching null, or score one, resumably and shared.

The null is scored before the input's rows are written, because every row carries its calibrated
values. Where it lives:

* ``--null FILE``: that file (reused when its key matches, refused naming what differs, replaced
  with ``--force``), over the run's tracks;
* otherwise the **null cache**: ``<cache folder>/nulls/null-<digest of the key>.tsv.gz``
  (:func:`cached_null_path`), over every track of the model, so every later run on the same model,
  genome, conservation and scoring options (a file output or a pipe, any VCF, any track subset,
  any user sharing the folder) reuses it. An entry whose first line is not its key, or whose
  checksum fails, is never used: it is scored again. A cache folder that cannot be written keeps
  the null in memory, with a warning.

Its SNVs go through the input's own scorer in parts of :data:`~epiformer_cli.variants.null.NULL_CHUNK`
(a :class:`~epiformer_cli.runs.parts.PartedOutput` beside the null file), so a killed
run resumes them. Every process that needs the null (shards of a SLURM array, torchrun ranks, a
second run started on the same output, another user's run on the same cache) works through the
parts it finds unfinished and unclaimed, starting with its own share, and waits for the ones
another live process holds: the null is computed once, whatever the number of processes, and
none of them waits forever for a shard that is not running.

The first windows scored are timed (:class:`NullPace`): an estimate over a minute is said in one
line, one over ``--max-null-minutes`` is refused before the hours are spent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from epiformer_cli import __version__
from epiformer_cli.errors import UsageError
from epiformer_cli.io.identity import cache_dir, file_identity
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


#: the announcement threshold: an estimated null time above this (s) is said before it is spent.
ANNOUNCE_SECONDS = 60.0
#: the clock the null's pace is measured with (a test replaces it).
clock: Callable[[], float] = time.perf_counter


def null_cache_folder() -> Path:
    """Where cached nulls live: ``<cache folder>/nulls`` (:func:`~epiformer_cli.io.identity.cache_dir`)."""
    return cache_dir() / "nulls"


def cached_null_path(key) -> Path:
    """The cache entry of the null of ``key``: named by the SHA-256 of the key's JSON, so a null
    made for other inputs or options is never at this name (and the file's own first line is
    checked against the key before use)."""
    text = json.dumps(plain(key), sort_keys=True, separators=(",", ":"))
    return null_cache_folder() / f"null-{hashlib.sha256(text.encode()).hexdigest()[:32]}.tsv.gz"


def _writable_cache() -> Optional[Path]:
    """The null cache folder, made if needed; None (with a warning) when it cannot be written."""
    folder = null_cache_folder()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        log.warning("cannot write the null cache %s (%s): the null is kept in memory for this run only; set "
                    "EPIFORMER_CACHE_DIR to a writable folder, or give --null FILE", folder, exc.strerror or exc)
        return None
    return folder


def scoring_key(options: ScoreOptions) -> Dict[str, object]:
    """The scoring options a null's values depend on (not the tracks: a null of more tracks serves
    a run on fewer; not the batch size, device or fast path, which change nothing beyond float
    rounding)."""
    inference = options.inference.fingerprint()
    inference.pop("tracks", None)
    return {"inference": inference, "window_mode": options.window_mode, "score_bins": options.score_bins,
            "no_cons": options.no_cons}


def null_calibration(inputs, scorer, tracks: List[str], options: ScoreOptions, shard: Shard,
                     progress: Optional[Progress] = None,
                     all_tracks: Optional[Callable[[], Tuple[object, List[str]]]] = None) -> Optional[Calibration]:
    """The calibration of this run (None with ``--null-size 0``).

    Args:
        inputs: the opened :class:`~epiformer_cli.inference.inputs.ModelInputs`.
        scorer: the run's :class:`~epiformer_cli.variants.scoring.VariantScorer`.
        tracks: the tracks scored.
        shard: this process's share of the work (its null parts are scored first; its count is
            the number of processes the time estimate divides the work between).
        progress: called as ``progress(n, total=size)`` with null SNVs scored.
        all_tracks: makes a scorer of every model track and their names, for a cached null when
            the run scores fewer (None: ``scorer`` scores them all).

    Raises:
        UsageError: a ``--null`` file made for other inputs or options (naming what differs), or
            one without the tracks scored; a null estimated to take over ``--max-null-minutes``.
    """
    if not options.null_size:
        return None
    key = _key(inputs, options)
    if options.null_path:
        path, null_tracks, force = Path(options.null_path), tracks, options.force
    else:
        folder = _writable_cache()
        path = cached_null_path(key) if folder is not None else None
        # the cache's own parts folder: one of another version of epiformer is replaced, not refused
        null_tracks, force = list(inputs.loaded.tracks), True
    require_memory(null_memory_bytes(options.null_size, len(null_tracks), in_memory=path is None),
                   f"the null of {options.null_size:,} SNVs in {len(null_tracks)} track(s)",
                   "lower --null-size, or give --null FILE (kept on disk)")
    if path is not None and not options.null_path:
        table = _reuse_cached(path, key, tracks)
    else:
        table = _reuse(path, key, tracks, force) if path is not None else None
    if table is None:
        if null_tracks != tracks:
            scorer, null_tracks = all_tracks() if all_tracks is not None else (scorer, tracks)
        table = _score(inputs, scorer, null_tracks, options, key, path, shard, progress, force)
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
    return plain(null_key(identities, scoring_key(options), options.null_size, options.seed, blacklist,
                          per_window(options)))


def per_window(options: ScoreOptions) -> int:
    """Null SNVs drawn per window: ``--null-per-window`` on the grid; 1 for centred windows (each
    variant has a window of its own: nothing to share)."""
    return options.null_per_window if options.window_mode == "grid" else 1


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


def _reuse_cached(path: Path, key, tracks: List[str]) -> Optional[NullTable]:
    """The cache entry at ``path`` when its first line is ``key`` and its checksum holds; None when
    it must be scored (an entry that does not match is removed: the cache never serves it)."""
    if not path.is_file():
        return None
    try:
        found = read_null_key(path)
    except UsageError:
        found = None
    if found != key:
        if PartedOutput.exists_for(path):
            return None  # a run is replacing it: its parts folder decides
        log.warning("the null cache entry %s was not made for this run (its key differs): scoring the null again",
                    path)
        path.unlink(missing_ok=True)
        return None
    try:
        table = read_null(path)
    except (CorruptPiece, UsageError) as exc:
        log.warning("%s: scoring the null again", exc)
        path.unlink(missing_ok=True)
        return None
    if any(t not in table.tracks for t in tracks):  # every model track is scored: a damaged entry
        log.warning("the null cache entry %s lacks tracks of this model: scoring the null again", path)
        path.unlink(missing_ok=True)
        return None
    log.info("reusing the null of %s SNVs from the cache (%s)", f"{table.size:,}", path)
    return table


def _groups(chunk: Sequence, size: int, window_bp: Optional[int]) -> List[List]:
    """A part's records in consecutive groups of whole grid windows (``window_bp``; None: each
    record is a window of its own), each of at least ``size`` SNVs (the last may be smaller): the
    unit of the null's progress and timing. A function of the records and the model only, so the
    batches, and the rounding, never depend on the clock."""
    groups: List[List] = [[]]
    last = None
    for index, record in enumerate(chunk):
        allele = record.alleles[0]
        window = (allele.chrom, allele.start // window_bp) if window_bp else index
        if len(groups[-1]) >= size and window != last:
            groups.append([])
        groups[-1].append(record)
        last = window
    return [g for g in groups if g]


class NullPace:
    """Times the null's first groups and says what the whole will cost, before paying it.

    After the first group: an estimate under :data:`ANNOUNCE_SECONDS` (and the limit) says
    nothing. Otherwise a second group is timed (the first carries one-off set-up: threads, memory,
    kernels) unless the first alone took over a minute; the estimate from it is refused
    (:class:`UsageError`, exit 2) when it exceeds ``limit_minutes`` (0: no limit), else said in
    one line when over :data:`ANNOUNCE_SECONDS`.

    Args:
        to_score: null SNVs left to score (parts already finished excluded).
        processes: processes sharing them (a SLURM array's task count; 1 alone).
        size: the null's size (for the message); device: what computes (for the message).
    """

    def __init__(self, to_score: int, processes: int, limit_minutes: float, size: int, device: str) -> None:
        self.left = int(to_score)
        self.processes = max(1, int(processes))
        self.limit = float(limit_minutes) * 60.0
        self.size, self.device = int(size), device
        self.timed = 0
        self.decided = False
        self.estimate: Optional[float] = None  # seconds, once decided

    def record(self, snvs: int, seconds: float) -> None:
        """One group of ``snvs`` scored in ``seconds``."""
        self.left -= snvs
        if self.decided or snvs <= 0:
            return
        self.timed += 1
        rate = snvs / max(seconds, 1e-9)
        estimate = max(self.left, 0) / rate / self.processes
        worth_saying = min(ANNOUNCE_SECONDS, self.limit) if self.limit else ANNOUNCE_SECONDS
        if self.timed == 1 and estimate > worth_saying and seconds < 60.0 and self.left > 0:
            return  # time a second group: the first carries set-up
        self.decided, self.estimate = True, estimate
        share = f" with {self.processes} processes sharing it" if self.processes > 1 else ""
        if self.limit and estimate > self.limit:
            raise UsageError(
                f"the null of {self.size:,} SNVs would take about {human_duration(estimate)} more on {self.device}"
                f"{share} ({rate:.3g} SNVs/s), over --max-null-minutes {self.limit / 60:g}: lower --null-size "
                "(p-values reach 1/(N+1)), --null-size 0 for uncalibrated scores, run on a GPU (--device cuda), or "
                "spread it over a SLURM array (each task scores a share, then all reuse it); or raise "
                "--max-null-minutes")
        if estimate > ANNOUNCE_SECONDS:
            log.info("the null: about %s more to score %s SNVs on %s%s (%.3g SNVs/s); it is cached for every later "
                     "run", human_duration(estimate), f"{self.left:,}", self.device, share, rate)


def human_duration(seconds: float) -> str:
    """``seconds`` as a person says it: ``45 s``, ``12 min``, ``3 h 20 min``, ``2 days 4 h``."""
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    if minutes < 90:
        return f"{minutes:.0f} min"
    hours, rest = divmod(int(round(minutes)), 60)
    if hours < 48:
        return f"{hours} h {rest} min" if rest else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} days {hours} h" if hours else f"{days} days"


def _score(inputs, scorer, tracks, options: ScoreOptions, key, path: Optional[Path], shard: Shard,
           progress, force: bool = False) -> NullTable:
    """Draw and score the null (into ``path``, resumably, or in memory)."""
    from epiformer_cli.model.incremental import trunk_batch_rows

    blacklist = None
    if options.null_blacklist:
        from epiformer_cli.io.bed import IntervalIndex, read_bed

        blacklist = IntervalIndex(read_bed(options.null_blacklist, inputs.genome.chrom_sizes, unknown="skip"))
    config = inputs.config
    window_bp = config.seq_len - 2 * config.crop_bp if options.window_mode == "grid" else None
    clustered = per_window(options)
    records = draw_null_snvs(inputs.genome, options.null_size, options.seed, blacklist, per_window=clustered,
                             window_bp=window_bp)
    chunks = [records[i:i + NULL_CHUNK] for i in range(0, len(records), NULL_CHUNK)]
    where = f"into {path}" if path is not None else "(kept in memory: --null FILE keeps it for the next VCF)"
    drawn = f", {clustered} a window" if clustered > 1 else ""
    log.info("scoring a genome-wide null of %s random SNVs (seed %d%s) %s", f"{len(records):,}", options.seed, drawn,
             where)
    advance = progress or (lambda n, total=None: None)
    advance(0, total=len(records))
    group_size = max(clustered, trunk_batch_rows(config))
    device = getattr(getattr(scorer, "engine", None), "device", None)
    pace: Optional[NullPace] = None

    def start_pace(to_score: int) -> None:
        nonlocal pace
        pace = NullPace(to_score, shard.count, options.max_null_minutes, len(records),
                        f"this {getattr(device, 'type', 'cpu').upper()}")

    def render(chunk) -> str:
        tasks = {(a.record, a.allele): scorer.check(a) for record in chunk for a in record.alleles}
        for group in _groups(chunk, group_size, window_bp):
            began = clock()
            scorer.score([tasks[(a.record, a.allele)] for record in group for a in record.alleles])
            if pace is not None:
                pace.record(len(group), clock() - began)
            advance(len(group))
        return tsv_rows(chunk, tasks, tracks)

    if path is None:
        start_pace(len(records))
        text = [tsv_header()]
        for chunk in chunks:
            text.append(render(chunk))
        return table_from_text(key, "".join(text))

    parts = PartedOutput(path, {"tool": __version__, "null": key, "tracks": tracks}, force=force)
    digests = [chunk_digest(i, [r.line for r in chunk]) for i, chunk in enumerate(chunks)]
    start_pace(sum(len(chunk) for i, chunk in enumerate(chunks) if parts.done(i, digests[i]) is None))
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
                    log.debug("scored part %d of the null %s", i + 1, path)
                    counted.add(i)  # its progress was given group by group
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
            parts = PartedOutput(path, {"tool": __version__, "null": key, "tracks": tracks}, force=force)
    if parts.folder.is_dir() and not parts.run.settings_path.exists():
        # the assembler removed the folder while this process was creating a claim file in it
        shutil.rmtree(parts.folder, ignore_errors=True)
    return read_null(path)
