"""Typed options of every job: what the command line builds, what a job takes, what a run records.

One frozen dataclass per job, sharing :class:`InferenceOptions` (device, precision, batch size,
test-time averaging, tracks). Values are checked and normalised once, when the object is built, so
a job never sees ``"bfloat16"`` or a batch size of 0. ``to_dict()`` is the provenance written
beside every output (VCF header lines, a TSV's ``.json`` sidecar, the prediction store's
``predict-options.json``); ``fingerprint()`` is the part of it that decides the results (fields
marked ``result=False``, such as the device or the batch size, do not), which a resumed run must
match.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Collection, Dict, Optional, Sequence, Tuple

from epiformer_cli.errors import UsageError

#: field metadata for options that do not change any result (left out of the resume fingerprint).
NOT_IN_RESULTS = {"result": False}

#: the one list of window modes and REF-mismatch policies of variant scoring.
WINDOW_MODES = ("grid", "centered")
REF_MISMATCH_POLICIES = ("skip", "error", "use-vcf-ref")
OUTPUT_FORMATS = ("tsv", "vcf")
EXPLAIN_METHODS = ("ism", "gradient")
STORE_DTYPES = ("float32", "float16")
#: the numeric precisions of ``--precision`` (what each computes in: :mod:`epiformer_cli.device`).
PRECISIONS = ("fp32", "bf16", "fp16")
#: the training losses of ``--loss`` (the functions: :mod:`epiformer_cli.training.losses`).
LOSSES = ("poisson", "poisson-multinomial")
#: SNVs in score-variants' genome-wide null by default, and the fewest it takes.
DEFAULT_NULL_SIZE = 10_000
MIN_NULL_SIZE = 100
#: null SNVs drawn per scoring window by default (grid windows): they share the window's reference
#: pass, so the null costs a fraction of independent SNVs' (benchmarks/README.md, calibration held).
DEFAULT_NULL_PER_WINDOW = 10
MAX_NULL_PER_WINDOW = 1000
#: minutes of null scoring a run may take before it refuses (--max-null-minutes; 0: no limit).
DEFAULT_MAX_NULL_MINUTES = 60.0

# ---- the upper bounds of every count option -------------------------------------------------------
# Each is far past any useful value, so it never stands in a real run's way; it exists so that a
# slip of the keyboard (a few zeros too many) is one line at once, not an hour of work or a machine
# starved of memory. What a value within the range costs is checked by the jobs' memory estimates
# (:func:`epiformer_cli.runs.space.require_memory`).
#: --null-size: p-values against a null of N SNVs go down to 1 / (1 + N); ten million resolves
#: 1e-7, the order of the genome-wide threshold (5e-8): a larger null has no statistical use, and
#: scoring it would take weeks.
MAX_NULL_SIZE = 10_000_000
#: --batch-size (windows per model call, inference and training): a CPU is as fast from a few
#: GFLOP a call on (the tiny preset: 8 windows), the largest GPU holds a few hundred full-size
#: windows; 4096 is past both for every preset.
MAX_BATCH_SIZE = 4096
#: input windows in bp (--window, --step): attention grows as (window / 128)^2; at 1 Mb that is
#: 8,192 bins (64 M scores per head and layer), ten times the largest preset (98,304 bp).
MAX_WINDOW_BP = 1 << 20
#: bases explained on each side of a variant (--flank, --explain-flank): the span must fit in the
#: output span of a window, never half of MAX_WINDOW_BP.
MAX_FLANK_BP = MAX_WINDOW_BP // 2
#: --score-bins: summed 128 bp bins, at most a window's worth (the model's own out_bins is checked
#: when it is read).
MAX_SCORE_BINS = MAX_WINDOW_BP // 128
#: --chunk-size (VCF records): a chunk's records, scoring tasks and rendered rows are held in memory
#: at once, and a chunk is the unit of resuming; a million records is gigabytes of Python objects.
MAX_CHUNK_RECORDS = 1_000_000
#: --chunk-windows (windows per prediction-store chunk): a chunk is cut at its chromosome's end,
#: so more windows than the longest chromosome holds change nothing; 100,000 tiny-preset windows
#: are 1.2 Gb of output, longer than any human chromosome.
MAX_CHUNK_WINDOWS = 100_000
#: --plot (regions plotted): a plot per region and track, about a second each; past a thousand
#: regions, read contrib.npz instead.
MAX_PLOTS = 1_000
#: --max-mutants: a billion ISM mutants take days even for the tiny preset on a GPU; the option
#: exists to accept a known cost (the refusal estimates it), not to turn the guard off.
MAX_MUTANTS = 1_000_000_000
#: --epochs, --max-steps, --warmup-steps, --checkpoint-every: a hundred thousand epochs, a hundred
#: million steps, are years of training at any preset's speed.
MAX_EPOCHS = 100_000
MAX_STEPS = 100_000_000
#: --accumulate: micro-batches per optimizer step; 4096 of them is a global batch past any used.
MAX_ACCUMULATE = 4096
#: --workers: DataLoader processes, each with its own copy of the dataset's buffers; more than a
#: large node's cores only adds memory.
MAX_WORKERS = 256
#: --seed: numpy's and torch's seeds take non-negative integers; 32 bits keep every derived seed
#: (training's per-epoch streams) in range.
MAX_SEED = 2 ** 32 - 1

# ---- what a user typed, for each setting a run records ---------------------------------------------
# A refusal of a store, null or run folder made with other settings names what differs as the user
# typed it, with both values ("--step: 4096 in the store, 8192 now"), never as the record's key
# ("fingerprint.options.inference.rc_average"). The keys of those records are a stored format and are
# never renamed for this: they are read through the table below
# (:func:`epiformer_cli.runs.destination.other_inputs`; tests/test_refusal_words.py builds every real
# record and checks that each of its keys has an entry, so the table cannot go stale).
#: containers of a record, left out of a key before it is looked up: ``fingerprint.options.inference.
#: rc_average`` is read as ``rc_average``, ``null.scoring.window_mode`` as ``window_mode``.
SETTING_CONTAINERS = ("fingerprint", "options", "inference", "inputs", "scoring", "null")
#: records whose keys are read in a namespace of their own (``null.size`` before ``size``), by the
#: record's ``kind``: a null's key, inside a parts folder's settings or in the null file itself.
SETTING_NAMESPACES = {"epiformer-null": "null"}
#: key (containers left out, a namespace first when there is one) -> the option a user types, or
#: for settings no option sets, what they are in words. A list of records (``prepare``'s target
#: tracks) is compared record by record: ``tracks.file`` is a track's bigWig. A pair ``--a/--no-a``
#: is named by the side this run takes.
SETTING_NAMES: Dict[str, str] = {
    # inputs: the identities of the files (size and SHA-256) and what the files decide
    "fasta": "--fasta", "cons": "--cons", "conservation_mode": "--cons",
    "model_sha256": "--model", "model_tracks": "--model", "vcf": "the VCF",
    "regions_sha256": "--regions", "blacklist": "--blacklist", "null.blacklist": "--null-blacklist",
    "null_blacklist": "--null-blacklist", "targets_sheet": "--targets", "tracks.name": "--targets",
    "tracks.path": "--targets", "tracks.file": "--targets", "tracks.scale": "--targets",
    "tracks.clip": "--targets", "tracks.stat": "--targets",
    # options of inference (predict, score-variants, explain)
    "precision": "--precision", "rc_average": "--rc-average/--no-rc-average", "shifts": "--shifts",
    "tracks": "--tracks", "no_cons": "--no-cons",
    # prepare
    "chroms": "--chroms", "valid_chroms": "--valid-chroms", "test_chroms": "--test-chroms",
    "window_bp": "--window", "step_bp": "--step", "max_n_fraction": "--max-n-fraction",
    # predict, and its store's layout (what the model, the genome and the options made of it)
    "chunk_windows": "--chunk-windows", "store_dtype": "--store-dtype",
    "layout.chrom_sizes": "--fasta", "layout.window_bp": "--model", "layout.crop_bp": "--model",
    "layout.bin_bp": "--model", "layout.chunk_windows": "--chunk-windows", "layout.tracks": "--tracks",
    "layout.dtype": "--store-dtype", "layout.chunks": "the store's chunks",
    # score-variants and its null
    "out_format": "--format", "score_bins": "--score-bins", "window_mode": "--window-mode",
    "on_ref_mismatch": "--on-ref-mismatch", "chunk_size": "--chunk-size", "null_size": "--null-size",
    "null.size": "--null-size", "seed": "--seed",
    "null_per_window": "--null-per-window", "null.per_window": "--null-per-window",
    "fast": "the fast scoring path", "motif_db": "--motif-db",
    # explain
    "method": "--method", "flank": "--flank", "top": "--top", "peak_width": "--peak-width",
    "peak_track": "--peak-track",
    # motifs
    "contrib": "--contrib", "window": "--window", "max_seqlets": "--max-seqlets",
    # pseudobulk
    "fragments": "--fragments", "cell_types": "--cell-types", "signal": "--signal",
    "count_duplicates": "--count-duplicates", "samples": "--fragments",
    # train --resume (TrainOptions.fixed_on_resume)
    "batch_size": "--batch-size", "accumulate": "--accumulate", "lr": "--lr", "weight_decay": "--weight-decay",
    "warmup_steps": "--warmup-steps", "loss": "--loss", "init": "--init", "clip_norm": "the clip norm",
    "min_lr_ratio": "the final learning-rate ratio", "rc_prob": "the reverse-complement probability",
    "max_shift": "the shift augmentation",
    # the format itself
    "kind": "what it holds", "format_version": "the format version", "store format": "the format version",
    "tool": "the epiformer version",
}
#: the inputs among the names above (a refusal says "made from other inputs" for them).
SETTING_INPUTS = ("--fasta", "--cons", "--model", "the VCF", "--regions", "--blacklist", "--null-blacklist",
                  "--targets", "--init", "--contrib", "--motif-db", "--fragments", "--cell-types")
#: what an unset (None) value of an option means, where it is not "none".
SETTING_UNSET = {"--chroms": "all", "--tracks": "all", "--chunk-windows": "auto", "--format": "from --out"}


def check_precision(precision: str) -> str:
    """Validate a ``--precision`` value and return it in canonical form."""
    value = (precision or "fp32").strip().lower()
    aliases = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}
    value = aliases.get(value, value)
    if value not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    return value


def split_names(values: Optional[Sequence[str] | str], option: str = "--tracks", *,
                unique: bool = True) -> Optional[Tuple[str, ...]]:
    """The one parser of list-of-names options: ``["a,b", " c"]`` (comma-separated, repeated, or
    both) -> ``("a", "b", "c")``, spaces around each name stripped, in order; repeats dropped unless
    ``unique=False`` (import-model reports a repeated track instead). None or nothing -> None
    ("all").

    Raises:
        UsageError: an empty name (``""``, ``a,,b``, ``a,``), which would otherwise pass unseen and
            choose all, or nothing; one line naming ``option`` and the syntax.
    """
    if values is None:
        return None
    names: list[str] = []
    for value in [values] if isinstance(values, str) else values:
        parts = [part.strip() for part in str(value).split(",")]
        if not all(parts):
            raise UsageError(f"empty name in {str(value)!r}: separate names by single commas, as in {option} a,b")
        names.extend(parts)
    return (tuple(dict.fromkeys(names)) if unique else tuple(names)) or None


def select_tracks(available: Sequence[str], wanted: Optional[Sequence[str]], what: str) -> list[str]:
    """Resolve ``--tracks a,b`` (comma-separated or repeated) against ``available``; all if None.

    Raises:
        UsageError: naming the unknown tracks and the ones ``what`` has.
    """
    names = split_names(wanted)
    if not names:
        return list(available)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise UsageError(f"--tracks {', '.join(unknown)}: not in {what} (it has {', '.join(available[:10])}"
                         f"{', ...' if len(available) > 10 else ''})")
    return list(names)


def parse_shifts(spec: str | Sequence[int] | None, bin_bp: int = 128) -> Tuple[int, ...]:
    """``"0,-3,3"`` (or a list) -> a tuple of distinct integer shifts in bp.

    Shifts must stay below half a bin (|s| < bin_bp / 2): the outputs are averaged on the
    unshifted 128 bp grid, as in training, where a sub-bin shift moves no bin.
    """
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return (0,)
    if isinstance(spec, str):
        try:
            values = [int(part) for part in spec.replace(" ", "").split(",") if part != ""]
        except ValueError:
            raise UsageError(f"--shifts must be comma-separated integers in bp, like 0,-3,3; got {spec!r}") from None
    else:
        values = [int(v) for v in spec]
    if not values:
        return (0,)
    for v in values:
        if abs(v) >= bin_bp // 2:
            raise UsageError(f"shift {v} bp is too large: shifts must be smaller than half a bin (|s| < {bin_bp // 2})")
    return tuple(dict.fromkeys(values))


def _range_problem(value: Optional[int], minimum: int, maximum: int, option: str) -> Optional[str]:
    """The one-line problem of a count outside ``[minimum, maximum]`` (None: inside, or not given).
    Below the range it reads as ever ("--batch-size must be at least 1, got 0")."""
    if value is None:
        return None
    if value < minimum:
        return f"{option} must be at least {minimum}, got {value}"
    if value > maximum:
        return f"{option} must be between {minimum:,} and {maximum:,} (got {value:,})"
    return None


def _within(value: Optional[int], minimum: int, maximum: int, option: str) -> None:
    """Refuse a count outside ``[minimum, maximum]``, naming the option (None: not given)."""
    problem = _range_problem(value, minimum, maximum, option)
    if problem:
        raise UsageError(problem)


def _one_of(value: str, allowed: Sequence[str], option: str) -> None:
    if value not in allowed:
        raise UsageError(f"{option} must be one of {', '.join(allowed)}, not {value!r}")


class _Options:
    """What every options class offers: plain-data views of itself."""

    def to_dict(self) -> Dict[str, Any]:
        """Every option as plain data (tuples become lists): the provenance of an output."""
        return _plain(self, everything=True)

    def fingerprint(self) -> Dict[str, Any]:
        """The options that decide the results: what a resumed run must match."""
        return _plain(self, everything=False)

    def replace(self, **changes: Any):
        """A copy with some options changed (checked again); nested options by their own names,
        e.g. ``options.replace(rc_average=False)`` on :class:`PredictOptions`."""
        return type(self).of(**{**_flat(self), **changes})

    @classmethod
    def of(cls, **values: Any):
        """Build from flat keyword arguments, nested options included:
        ``PredictOptions.of(chroms=["chr1"], rc_average=False)`` puts ``rc_average`` into its
        :class:`InferenceOptions`. Unknown names are a usage error."""
        values = dict(values)
        kwargs: Dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            nested = f.default_factory if f.default_factory is not dataclasses.MISSING else None
            if isinstance(nested, type) and issubclass(nested, _Options):
                inner = {n.name: values.pop(n.name) for n in dataclasses.fields(nested) if n.name in values}
                if f.name in values:
                    kwargs[f.name] = values.pop(f.name).replace(**inner) if inner else values.pop(f.name)
                else:
                    kwargs[f.name] = nested(**inner)
            elif f.name in values:
                kwargs[f.name] = values.pop(f.name)
        if values:
            raise UsageError(f"unknown option(s) for {cls.__name__}: {', '.join(sorted(values))}")
        return cls(**kwargs)


def _flat(options: Any) -> Dict[str, Any]:
    """Every option by its own name, nested options' fields included (for :meth:`_Options.of`)."""
    out: Dict[str, Any] = {}
    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        if isinstance(value, _Options):
            out.update(_flat(value))
        else:
            out[f.name] = value
    return out


def _plain(options: Any, everything: bool) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for f in dataclasses.fields(options):
        if not everything and not f.metadata.get("result", True):
            continue
        value = getattr(options, f.name)
        if isinstance(value, _Options):
            value = _plain(value, everything)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


@dataclass(frozen=True)
class InferenceOptions(_Options):
    """How a model is run: shared by ``predict``, ``score-variants`` and later commands.

    Attributes:
        device: ``auto|cpu|cuda|cuda:N|mps`` (resolved by :func:`epiformer_cli.device.compute_device`).
        precision: ``fp32`` (bit-identical at any batch size), ``bf16`` or ``fp16`` (CUDA only).
        batch_size: windows per model call; None chooses per device.
        rc_average: average with the reverse-complement strand's prediction (flipped back).
        shifts: input shifts in bp to average over (|s| < 64); ``(0,)`` is none.
        tracks: model track names to compute, in this order; None is all of them.
    """

    device: str = field(default="auto", metadata=NOT_IN_RESULTS)
    precision: str = "fp32"
    batch_size: Optional[int] = field(default=None, metadata=NOT_IN_RESULTS)
    rc_average: bool = True
    shifts: Tuple[int, ...] = (0,)
    tracks: Optional[Tuple[str, ...]] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", (self.device or "auto").strip().lower())
        object.__setattr__(self, "precision", check_precision(self.precision))
        _within(self.batch_size, 1, MAX_BATCH_SIZE, "--batch-size")
        object.__setattr__(self, "rc_average", bool(self.rc_average))
        object.__setattr__(self, "shifts", parse_shifts(self.shifts))
        object.__setattr__(self, "tracks", split_names(self.tracks))


@dataclass(frozen=True)
class PrepareOptions(_Options):
    """How ``prepare`` cuts a genome into training windows.

    Attributes:
        window_bp: window length in bp (the model's input length; a multiple of 128).
        step_bp: distance between window starts (None: the window length, no overlap).
        chroms: chromosomes to use (None: all of the FASTA's); aliases (1 vs chr1) are resolved.
        valid_chroms, test_chroms: held-out chromosomes (None: chr8 / chr9).
        max_n_fraction: windows with a larger fraction of N bases are dropped.
        force: rebuild a store (or an interrupted build) made from other inputs or options.
    """

    window_bp: int = 98_304
    step_bp: Optional[int] = None
    chroms: Optional[Tuple[str, ...]] = None
    valid_chroms: Optional[Tuple[str, ...]] = None
    test_chroms: Optional[Tuple[str, ...]] = None
    max_n_fraction: float = 0.1
    force: bool = field(default=False, metadata=NOT_IN_RESULTS)

    def __post_init__(self) -> None:
        step = self.step_bp or self.window_bp
        if self.window_bp <= 0 or self.window_bp % 128 or step <= 0 or step % 128:
            raise UsageError(f"window ({self.window_bp}) and step ({step}) must be positive multiples of 128 bp")
        _within(self.window_bp, 128, MAX_WINDOW_BP, "--window")
        _within(step, 128, MAX_WINDOW_BP, "--step")
        object.__setattr__(self, "step_bp", step)
        if not 0 <= self.max_n_fraction <= 1:
            raise UsageError("--max-n-fraction must be between 0 and 1")
        for name in ("chroms", "valid_chroms", "test_chroms"):
            object.__setattr__(self, name, split_names(getattr(self, name)))


@dataclass(frozen=True)
class PredictOptions(_Options):
    """How ``predict`` covers a genome.

    Attributes:
        inference: how the model runs (:class:`InferenceOptions`).
        chroms: chromosomes to predict (None: all of the FASTA's).
        chunk_windows: windows per store chunk, the unit of resuming and sharding (None: ~4 Mb).
        store_dtype: ``float32`` (exact) or ``float16`` (half the disk) in the store.
        window: the input length the caller expects the model to take (refused if it differs).
        no_cons: predict without conservation although the model was trained with it (warned).
        shard: ``I/N`` (None: the SLURM array task, or everything).
        force: discard a store made with other inputs or options, replace existing bigWigs.
    """

    inference: InferenceOptions = field(default_factory=InferenceOptions)
    chroms: Optional[Tuple[str, ...]] = None
    chunk_windows: Optional[int] = None
    store_dtype: str = "float32"
    window: Optional[int] = field(default=None, metadata=NOT_IN_RESULTS)
    no_cons: bool = False
    shard: Optional[str] = field(default=None, metadata=NOT_IN_RESULTS)
    force: bool = field(default=False, metadata=NOT_IN_RESULTS)

    def __post_init__(self) -> None:
        _one_of(self.store_dtype, STORE_DTYPES, "--store-dtype")
        _within(self.chunk_windows, 1, MAX_CHUNK_WINDOWS, "--chunk-windows")
        _within(self.window, 128, MAX_WINDOW_BP, "--window")
        object.__setattr__(self, "chroms", split_names(self.chroms))


@dataclass(frozen=True)
class ScoreOptions(_Options):
    """How ``score-variants`` scores alleles.

    Attributes:
        inference: how the model runs (no input shifts).
        out_format: ``tsv`` or ``vcf``; None: from the output's name (``.vcf``, ``.vcf.gz``,
            ``.bcf``: vcf; otherwise tsv), resolved by the job.
        score_bins: 128 bp bins summed for ``ref_sum``/``alt_sum``, centred on the variant.
        window_mode: ``grid`` (shared genome-wide windows) or ``centered``.
        on_ref_mismatch: ``skip`` (status ref_mismatch), ``error`` or ``use-vcf-ref``.
        chunk_size: VCF records per chunk (memory, resume and shard unit).
        fast: the incremental substitution path (False: plain full passes, for comparison).
        no_cons: score without conservation although the model was trained with it (warned).
        strict: any allele whose status is not ``ok`` is an error.
        shard: ``I/N`` (None: the SLURM array task, or everything); needs an output file.
        force: replace an existing output file and discard parts of a run of other settings.
        explain_top, explain_dir: explain the ``explain_top`` strongest variants (max |diff| over
            tracks, at most 100) into the folder ``explain_dir`` (``epiformer explain --variants``);
            explain_method, explain_flank: its ``--method`` and ``--flank``.
        null_size: SNVs of the genome-wide null that calibrates the scores (0: no calibration).
        seed: seeds the null's positions and ALT bases.
        null_blacklist: BED of regions the null draws no position from.
        null_per_window: null SNVs drawn per grid window (they share its reference pass; 1: each
            in a window of its own; ``centered`` windows always draw 1).
        null_path: the null file to reuse when it matches, or to write (None: the null cache,
            :func:`epiformer_cli.variants.null_run.cached_null_path`).
        max_null_minutes: refuse a null whose scoring is estimated to take longer (0: no limit).
        plots: folder for the calibration plots (Q-Q, diff against the null, top variants).
        motif_db: a MEME file or a ``motifs --out`` folder: add the strongest motif instance each
            allele overlaps (None: no motif columns). Its content, not its path, is part of a
            run's identity (the job adds the file's identity to the inputs).
    """

    inference: InferenceOptions = field(default_factory=InferenceOptions)
    out_format: Optional[str] = None
    score_bins: int = 5
    window_mode: str = "grid"
    on_ref_mismatch: str = "skip"
    chunk_size: int = 5000
    fast: bool = True
    no_cons: bool = False
    strict: bool = field(default=False, metadata=NOT_IN_RESULTS)
    shard: Optional[str] = field(default=None, metadata=NOT_IN_RESULTS)
    force: bool = field(default=False, metadata=NOT_IN_RESULTS)
    explain_top: int = field(default=0, metadata=NOT_IN_RESULTS)
    explain_dir: Optional[str] = field(default=None, metadata=NOT_IN_RESULTS)
    explain_method: str = field(default="ism", metadata=NOT_IN_RESULTS)
    explain_flank: int = field(default=200, metadata=NOT_IN_RESULTS)
    null_size: int = DEFAULT_NULL_SIZE
    seed: int = 0
    null_blacklist: Optional[str] = None
    null_per_window: int = DEFAULT_NULL_PER_WINDOW
    null_path: Optional[str] = field(default=None, metadata=NOT_IN_RESULTS)
    max_null_minutes: float = field(default=DEFAULT_MAX_NULL_MINUTES, metadata=NOT_IN_RESULTS)
    plots: Optional[str] = field(default=None, metadata=NOT_IN_RESULTS)
    motif_db: Optional[str] = field(default=None, metadata=NOT_IN_RESULTS)

    def __post_init__(self) -> None:
        for name in ("null_path", "null_blacklist", "plots", "motif_db"):  # paths as plain strings (provenance is JSON)
            if getattr(self, name) is not None:
                object.__setattr__(self, name, str(getattr(self, name)))
        _within(self.null_size, 0, MAX_NULL_SIZE, "--null-size")
        _within(self.seed, 0, MAX_SEED, "--seed")
        _within(self.null_per_window, 1, MAX_NULL_PER_WINDOW, "--null-per-window")
        object.__setattr__(self, "max_null_minutes", float(self.max_null_minutes))
        if not self.max_null_minutes >= 0:  # also NaN
            raise UsageError(f"--max-null-minutes must be 0 (no limit) or more, got {self.max_null_minutes:g}")
        if self.null_size and self.null_size < MIN_NULL_SIZE:
            raise UsageError(f"--null-size must be 0 (no calibration) or at least {MIN_NULL_SIZE}, got {self.null_size}: "
                             "a smaller null cannot give p-values below 0.01")
        if not self.null_size and (self.null_path or self.plots or self.null_blacklist):
            given = [o for o, v in (("--null", self.null_path), ("--plots", self.plots),
                                    ("--null-blacklist", self.null_blacklist)) if v]
            raise UsageError(f"{', '.join(given)} needs a null: drop --null-size 0")
        _one_of(self.explain_method, EXPLAIN_METHODS, "--explain-method")
        _within(self.explain_flank, 0, MAX_FLANK_BP, "--explain-flank")
        if not 0 <= self.explain_top <= 100:
            raise UsageError(f"--explain-top takes 1 to 100 variants, got {self.explain_top} (explain more with "
                             "`epiformer explain --variants`)")
        if self.explain_top and not self.explain_dir:
            raise UsageError("--explain-top N needs a folder: --explain-top N DIR")
        if self.out_format is not None:
            _one_of(self.out_format, OUTPUT_FORMATS, "--format")
        _one_of(self.window_mode, WINDOW_MODES, "--window-mode")
        _one_of(self.on_ref_mismatch, REF_MISMATCH_POLICIES, "--on-ref-mismatch")
        _within(self.score_bins, 1, MAX_SCORE_BINS, "--score-bins")
        _within(self.chunk_size, 1, MAX_CHUNK_RECORDS, "--chunk-size")
        if self.inference.shifts != (0,):
            raise UsageError("variant scoring does not take input shifts")


@dataclass(frozen=True)
class ExplainOptions(_Options):
    """How ``explain`` attributes predictions to bases.

    Attributes:
        inference: how the model runs (no input shifts; ``batch_size`` is not used: ISM batches
            are sized from the model, so values never depend on it).
        method: ``ism`` (every base mutated to the 3 others, exact) or ``gradient`` (gradient x
            input with the per-position mean removed).
        flank: variants: bases explained on each side of the REF allele.
        plot: plots for the first this many regions (0: none).
        max_mutants: refuse an ISM run of more mutants than this (with an estimate of its time).
        no_cons: explain a model trained with conservation on all-zero conservation (warned).
        force: replace the results of an earlier run in the output folder.
        shard: ``I/N``: explain every N-th region only (None: the SLURM array task, or all).
        top, peak_width, peak_track: ``--peaks``: explain the ``top`` highest non-overlapping windows
            of ``peak_width`` bp of the track (``peak_track``: one of a several-track prediction's
            files); they choose the regions, so a resumed run or a shard must match them.
        motif_db: variants: a MEME file or a ``motifs`` output folder; each variant's plots mark the
            strongest motif instance it overlaps (as ``score-variants --motif-db`` finds it).
    """

    #: --top: a million regions is days of gradient and gigabytes of contrib.npz per track
    MAX_TOP = 1_000_000

    inference: InferenceOptions = field(default_factory=InferenceOptions)
    method: str = "ism"
    flank: int = 200
    plot: int = field(default=20, metadata=NOT_IN_RESULTS)
    max_mutants: int = field(default=100_000, metadata=NOT_IN_RESULTS)
    no_cons: bool = False
    force: bool = field(default=False, metadata=NOT_IN_RESULTS)
    shard: Optional[str] = field(default=None, metadata=NOT_IN_RESULTS)
    top: int = 1000
    peak_width: int = 500
    peak_track: Optional[str] = None
    motif_db: Optional[str] = field(default=None, metadata=NOT_IN_RESULTS)

    def __post_init__(self) -> None:
        if self.motif_db is not None:
            object.__setattr__(self, "motif_db", str(self.motif_db))  # provenance is JSON
        _one_of(self.method, EXPLAIN_METHODS, "--method")
        _within(self.flank, 0, MAX_FLANK_BP, "--flank")
        _within(self.top, 1, self.MAX_TOP, "--top")
        # a region never spans more than a window (the model's own limit is checked when it is read)
        _within(self.peak_width, 1, MAX_WINDOW_BP, "--peak-width")
        if self.peak_track is not None and not self.peak_track.strip():
            raise UsageError("--peak-track is empty: name a track of the --peaks prediction")
        _within(self.plot, 0, MAX_PLOTS, "--plot")
        _within(self.max_mutants, 0, MAX_MUTANTS, "--max-mutants")
        if self.inference.shifts != (0,):
            raise UsageError("explain does not take input shifts")


#: field metadata for training options that change the results but that a resumed run may still
#: change: how long it runs, and its precision (a run moved to another device).
FREE_ON_RESUME = {"fixed_on_resume": False}


@dataclass(frozen=True)
class TrainOptions(_Options):
    """How ``train`` fits a model (not the network's shape, which :class:`ModelConfig` holds).

    Attributes:
        epochs: passes over the training windows; the learning-rate schedule spans them.
        max_steps: stop after this many optimizer steps in total (the schedule spans ``epochs``
            when given, else ``max_steps``). Neither given: 10 epochs.
        batch_size: windows per micro-batch on each process.
        accumulate: micro-batches per optimizer step (global batch = batch_size * accumulate * processes).
        lr: peak learning rate of AdamW; weight_decay: its decoupled weight decay.
        warmup_steps: linear warm-up steps before the cosine decay (to ``min_lr_ratio * lr``).
        clip_norm: gradient-norm clipping threshold (0 = off).
        loss: ``poisson`` or ``poisson-multinomial``.
        rc_prob, max_shift: augmentation (reverse-complement probability, shift range in bp).
        seed: seeds initialisation, order, augmentation and dropout.
        init: a model file to fine-tune (``--init``): it gives the architecture and the starting
            weights; kept as an absolute path. None trains from a fresh initialisation.
        checkpoint_every: also write ``last.pt`` every this many steps (None: each epoch end).
        workers: DataLoader worker processes (None: min(4, cpus - 1), 0 with one cpu).
        device, precision: where and in what precision to compute.

    A resumed run keeps the options that change its arithmetic (:meth:`fixed_on_resume`).
    """

    epochs: Optional[int] = field(default=None, metadata=FREE_ON_RESUME)
    max_steps: Optional[int] = field(default=None, metadata=FREE_ON_RESUME)
    batch_size: int = 8
    accumulate: int = 1
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    clip_norm: float = 5.0
    min_lr_ratio: float = 0.05
    loss: str = "poisson"
    rc_prob: float = 0.5
    max_shift: int = 3
    seed: int = 0
    init: Optional[str] = None
    checkpoint_every: Optional[int] = field(default=None, metadata=NOT_IN_RESULTS)
    workers: Optional[int] = field(default=None, metadata=NOT_IN_RESULTS)
    device: str = field(default="auto", metadata=NOT_IN_RESULTS)
    precision: str = field(default="fp32", metadata=FREE_ON_RESUME)

    def __post_init__(self) -> None:
        # every problem at once, so a command line with two mistakes is fixed in one go
        problems = []
        for name, maximum in (("epochs", MAX_EPOCHS), ("max_steps", MAX_STEPS), ("checkpoint_every", MAX_STEPS),
                              ("batch_size", MAX_BATCH_SIZE), ("accumulate", MAX_ACCUMULATE)):
            problems.append(_range_problem(getattr(self, name), 1, maximum, f"--{name.replace('_', '-')}"))
        if self.warmup_steps > MAX_STEPS:  # a negative one is named below, with its neighbours
            problems.append(_range_problem(self.warmup_steps, 0, MAX_STEPS, "--warmup-steps"))
        problems.append(_range_problem(self.seed, 0, MAX_SEED, "--seed"))
        problems = [p for p in problems if p]
        if not self.lr > 0:
            problems.append(f"--lr must be positive, got {self.lr}")
        if self.weight_decay < 0 or self.warmup_steps < 0 or self.clip_norm < 0:
            problems.append("--weight-decay, --warmup-steps and the clip norm must not be negative")
        if self.workers is not None and self.workers < 0:
            problems.append(f"--workers must be 0 or more, got {self.workers}")
        elif self.workers is not None and self.workers > MAX_WORKERS:
            problems.append(_range_problem(self.workers, 0, MAX_WORKERS, "--workers"))
        if self.loss not in LOSSES:
            problems.append(f"--loss must be one of {', '.join(LOSSES)}, not {self.loss!r}")
        if not 0 <= self.rc_prob <= 1 or self.max_shift < 0:
            problems.append("rc_prob must be in [0, 1] and max_shift >= 0")
        if problems:
            raise UsageError("; ".join(problems))
        object.__setattr__(self, "precision", check_precision(self.precision))
        if self.init is not None:
            # absolute, so a resumed run started from another folder names the same file
            object.__setattr__(self, "init", os.path.abspath(os.path.expanduser(os.fspath(self.init))))

    @classmethod
    def fixed_on_resume(cls) -> Tuple[str, ...]:
        """The options a resumed run must keep: those that change the results, but the run's
        length and precision (fields marked ``FREE_ON_RESUME``)."""
        return tuple(f.name for f in dataclasses.fields(cls)
                     if f.metadata.get("result", True) and f.metadata.get("fixed_on_resume", True))

    def resumed(self, saved: Dict[str, Any], given: Optional[Collection[str]] = None) -> "TrainOptions":
        """These options, for continuing the run whose options were ``saved`` (its ``to_dict()``).

        The options of :meth:`fixed_on_resume` become the run's own: one not given means "as
        before", a given one with another value is refused. ``given`` names the options the user
        set (a command line's, even at their default value); None: those whose value is not the
        default. ``epochs`` and ``max_steps`` are the run's unless either is set (to lengthen or
        shorten it); the rest are these.

        Raises:
            UsageError: naming every fixed option given with a value other than the run's.
        """
        run, defaults = TrainOptions(**saved), TrainOptions()
        fixed = self.fixed_on_resume()
        if given is None:
            given = [name for name in fixed if getattr(self, name) != getattr(defaults, name)]
        def shown(value: Any) -> str:
            return "none" if value is None else str(value)

        differing = [f"{SETTING_NAMES.get(name, name)}: {shown(getattr(run, name))} in the run, "
                     f"{shown(getattr(self, name))} now"
                     for name in fixed if name in given and getattr(self, name) != getattr(run, name)]
        if differing:
            raise UsageError(
                "--resume continues a run with its own settings, and these differ (" + "; ".join(differing)
                + "): drop them, or start a new run with --force"
            )
        changes = {name: getattr(run, name) for name in fixed}
        if self.epochs is None and self.max_steps is None:
            changes.update(epochs=run.epochs, max_steps=run.max_steps)
        return dataclasses.replace(self, **changes)


#: bounds of motifs' options: TF-MoDISco clusters a sign's seqlets only when it has more than 100;
#: its seqlets are 21 bp cores with 10 bp flanks, so a narrower window holds none.
MIN_MOTIF_WINDOW, MAX_MOTIF_WINDOW = 41, 100_000
MIN_MAX_SEQLETS, MAX_MAX_SEQLETS = 101, 1_000_000


@dataclass(frozen=True)
class MotifsOptions(_Options):
    """How ``motifs`` finds patterns in explain's contributions and names them.

    Attributes:
        tracks: the tracks to analyse (None: every track the folders explained).
        window: bp at the centre of each explained region given to TF-MoDISco (shorter regions are
            zero-padded).
        max_seqlets: at most this many seqlets per track and sign are clustered.
        motif_db: a MEME file to match the patterns against (None: JASPAR CORE vertebrates); it
            decides only the matching, so a resumed run may change it.
        force: replace the results of an earlier run in the output folder.
    """

    tracks: Optional[Tuple[str, ...]] = None
    window: int = 400
    max_seqlets: int = 2000
    motif_db: Optional[str] = field(default=None, metadata=NOT_IN_RESULTS)
    force: bool = field(default=False, metadata=NOT_IN_RESULTS)

    def __post_init__(self) -> None:
        if self.tracks is not None:
            object.__setattr__(self, "tracks", tuple(split_names(self.tracks, "--tracks")))
        _within(self.window, MIN_MOTIF_WINDOW, MAX_MOTIF_WINDOW, "--window")
        _within(self.max_seqlets, MIN_MAX_SEQLETS, MAX_MAX_SEQLETS, "--max-seqlets")


#: what pseudobulk writes per base, and how it scales it
PSEUDOBULK_SIGNALS = ("insertions", "coverage")
PSEUDOBULK_NORMALIZATIONS = ("cpm", "none")


@dataclass(frozen=True)
class PseudobulkOptions(_Options):
    """How ``pseudobulk`` turns fragments into one bigWig per cell type.

    Attributes:
        signal: ``insertions`` (Tn5 insertions per base: a fragment's first and last base) or
            ``coverage`` (fragments covering each base).
        normalize: ``cpm`` (per million fragments of the cell type) or ``none`` (raw counts); it
            decides only the written values, so a resumed run may change it.
        count_duplicates: weigh each fragment by its count column (read pairs) instead of once.
        min_cells, min_fragments: refuse a cell type with fewer cells or fragments (too small a
            pseudo-bulk to train on); they decide no value.
        chroms: the chromosomes to write (None: every FASTA chromosome).
        force: replace the results of an earlier run in the output folder.
    """

    signal: str = "insertions"
    normalize: str = field(default="cpm", metadata=NOT_IN_RESULTS)
    count_duplicates: bool = False
    min_cells: int = field(default=20, metadata=NOT_IN_RESULTS)
    min_fragments: int = field(default=100_000, metadata=NOT_IN_RESULTS)
    chroms: Optional[Tuple[str, ...]] = None
    force: bool = field(default=False, metadata=NOT_IN_RESULTS)

    def __post_init__(self) -> None:
        if self.signal not in PSEUDOBULK_SIGNALS:
            raise UsageError(f"--signal must be one of {', '.join(PSEUDOBULK_SIGNALS)}, not {self.signal!r}")
        if self.normalize not in PSEUDOBULK_NORMALIZATIONS:
            raise UsageError(f"--normalize must be one of {', '.join(PSEUDOBULK_NORMALIZATIONS)}, "
                             f"not {self.normalize!r}")
        _within(self.min_cells, 1, 10**9, "--min-cells")
        _within(self.min_fragments, 1, 10**12, "--min-fragments")
        if self.chroms is not None:
            object.__setattr__(self, "chroms", split_names(self.chroms, "--chroms"))


@dataclass(frozen=True)
class EvaluateInference(InferenceOptions):
    """:class:`InferenceOptions` of ``evaluate``: the forward strand alone by default, as ``train``
    scores its validation and test windows, so that evaluate's numbers are train's."""

    rc_average: bool = False


#: --loci: example loci drawn in evaluate's report (a figure row each).
MAX_LOCI = 20


@dataclass(frozen=True)
class EvaluateOptions(_Options):
    """How ``evaluate`` scores a model against observed tracks.

    Attributes:
        inference: how the model runs (default: no reverse-complement averaging, as ``train``).
        chroms: the chromosomes to evaluate (None: the held-out test chromosomes).
        top_fraction: without ``--peaks``, each track's peaks are its top this fraction of target
            bins (0.01: the top 1%).
        loci: example loci drawn in the report (0: none).
        no_cons: run a model trained with conservation on all-zero conservation (warned).
        force: replace the results of an earlier run in the output folder.
    """

    inference: InferenceOptions = field(default_factory=EvaluateInference)
    chroms: Optional[Tuple[str, ...]] = None
    top_fraction: float = 0.01
    loci: int = field(default=3, metadata=NOT_IN_RESULTS)
    no_cons: bool = False
    force: bool = field(default=False, metadata=NOT_IN_RESULTS)

    def __post_init__(self) -> None:
        if self.chroms is not None:
            object.__setattr__(self, "chroms", split_names(self.chroms, "--chroms"))
        if not 0 < self.top_fraction < 1:
            raise UsageError(f"--top-fraction must lie between 0 and 1 (0.01 is the top 1%), got {self.top_fraction}")
        _within(self.loci, 0, MAX_LOCI, "--loci")
