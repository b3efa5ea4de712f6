"""The notebook API: load a model, predict a region to an array, score variants to a DataFrame,
explain regions to arrays.

Each function is the same code path as its command (no second implementation): the same input
rules (:func:`~epiformer_cli.inference.inputs.open_inputs`), the same window tiling, reader, engine
and test-time averaging; only the destination differs (arrays and DataFrames instead of files).
So a notebook's numbers equal the command's bigWig and TSV values. Import them from the package
top (importing ``epiformer_cli`` itself stays cheap; torch loads on first use)::

    import epiformer_cli as epi
    model = epi.load_model("run/model.pt")
    epi.import_model("brain18.best_corr.pth.tar", "brain18.pt", tracks="tracks.txt")  # published models
    pred = epi.predict_region("hg38.fa", "phastcons.bw", "run/model.pt", "chr1", 1_000_000, 1_010_000)
    pred.values            # (tracks, bins) float32, 128 bp bins
    scores = epi.score_variants([("chr1", 1_005_000, "A", "G")], "hg38.fa", "phastcons.bw", "run/model.pt")
    contrib = epi.explain_regions([("chr1", 1_004_900, 1_005_100, "peak")], "hg38.fa", "phastcons.bw", "run/model.pt", "out/")
    table = epi.find_motifs("explained/", "motifs/")   # after explaining thousands of regions

Coordinates are 0-based, half-open for regions; variant positions are 1-based, as in a VCF.

Threads: the functions compute with torch's threads as they are. ``use_threads(n)`` (below) sets
them as a command's ``--threads`` does (default: EPIFORMER_THREADS, else the CPUs this process may
use: its affinity, limited by its cgroup CPU quota). On a node shared with busy processes, also
start Python with ``OMP_WAIT_POLICY=PASSIVE`` set (the commands set it themselves): OpenMP reads it
only when torch is first imported.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas as pd

    from epiformer_cli.model.modelfile import LoadedModel

PathLike = Union[str, os.PathLike]


def use_threads(threads: Optional[int] = None) -> int:
    """Compute with ``threads`` CPU threads from now on (torch's), as a command's ``--threads`` does;
    None: EPIFORMER_THREADS, else the CPUs this process may use (affinity and cgroup quota). Returns
    the count. Calling it again is harmless.

    Raises:
        UsageError: ``threads`` (or EPIFORMER_THREADS) is not a whole number >= 1.
    """
    from epiformer_cli.threads import thread_count, use_threads as _use

    return _use(thread_count(threads))


def load_model(path: PathLike, device: str = "cpu") -> "LoadedModel":
    """Read a model file safely (no code from the file runs): the eval-mode network, its config,
    track names, normalisation and provenance (:class:`~epiformer_cli.model.modelfile.LoadedModel`).

    ``device``: ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``auto`` (falls back to the CPU).
    """
    from epiformer_cli.device import resolve_device
    from epiformer_cli.model.modelfile import load_model as _load

    return _load(path, resolve_device(device))


def import_model(checkpoint: PathLike, out: PathLike, tracks: Optional[Sequence[str] | str] = None,
                 force: bool = False) -> Path:
    """Convert a published Epiformer checkpoint into a model file (``epiformer import-model``) and
    return its path; then use it as ``model`` everywhere. ``tracks``: names in output order, a
    comma-separated string, or a file of one name per line (default ``track1..N``, with a warning).
    """
    from epiformer_cli.jobs.import_model import import_model as _import

    return _import(checkpoint, out, tracks=tracks, force=force).out


@dataclass
class RegionPrediction:
    """Predicted accessibility over a region, per 128 bp bin.

    Attributes:
        values: (tracks, bins) float32; bin ``i`` covers ``[start + i * bin_bp, start + (i + 1) * bin_bp)``.
        tracks: track names, in the order of ``values``' first axis.
        chrom: the FASTA's name of the chromosome.
        start, end: the bins' span, 0-based half-open: the requested region widened to the 128 bp
            grid (``end`` clipped to the chromosome).
        bin_bp: bin width (128).
    """

    values: np.ndarray
    tracks: List[str]
    chrom: str
    start: int
    end: int
    bin_bp: int = 128

    @property
    def bin_starts(self) -> np.ndarray:
        """(bins,) int64: the start of each bin."""
        return self.start + self.bin_bp * np.arange(self.values.shape[1], dtype=np.int64)

    def to_frame(self) -> "pd.DataFrame":
        """A tidy table: chrom, start, end, then one column per track."""
        import pandas as pd

        starts = self.bin_starts
        frame = pd.DataFrame({"chrom": self.chrom, "start": starts,
                              "end": np.minimum(starts + self.bin_bp, self.end)})
        for name, row in zip(self.tracks, self.values):
            frame[name] = row
        return frame


def predict_region(fasta: PathLike, cons: Optional[PathLike], model: PathLike, chrom: str, start: int, end: int,
                   **options: Any) -> RegionPrediction:
    """Predict the 128 bp bins overlapping ``chrom:[start, end)`` (0-based, half-open), exactly as
    ``epiformer predict --regions`` computes them (the same bins of a whole-genome run).

    Args:
        fasta, cons, model: as for ``epiformer predict`` (``cons`` may be None only for a model
            without conservation, or with ``no_cons=True``).
        chrom: chromosome name (aliases such as ``1`` for ``chr1`` are resolved).
        start, end: the region, 0-based half-open.
        **options: :class:`~epiformer_cli.options.InferenceOptions` fields (``tracks``,
            ``rc_average``, ``shifts``, ``precision``, ``device``, ``batch_size``) and ``no_cons``.
    """
    from epiformer_cli.data.prediction_store import StoreLayout
    from epiformer_cli.data.tiling import WindowGrid
    from epiformer_cli.device import compute_device
    from epiformer_cli.errors import UsageError
    from epiformer_cli.inference.engine import InferenceEngine
    from epiformer_cli.inference.reader import WindowReader
    from epiformer_cli.io.chroms import resolve_names
    from epiformer_cli.inference.inputs import open_inputs
    from epiformer_cli.jobs.predict import CHUNK_BP, plan_chunks, run_chunks
    from epiformer_cli.options import InferenceOptions

    no_cons = bool(options.pop("no_cons", False))
    inference = InferenceOptions(**{"device": "cpu", **options})
    inputs = open_inputs(fasta, cons, model, no_cons=no_cons)
    try:
        sizes = dict(inputs.genome.chrom_sizes)
        name = resolve_names([chrom], list(sizes), "chrom", str(fasta))[0]
        if not 0 <= start < end <= sizes[name]:
            raise UsageError(f"region {chrom}:{start}-{end} is not inside {name} (0 to {sizes[name]:,} bp)")
        grid = WindowGrid.from_config(inputs.config)
        names = inputs.track_names(inference.tracks)
        layout = StoreLayout(sizes, grid.window_bp, grid.crop_bp, grid.bin_bp,
                             max(1, round(CHUNK_BP / grid.out_bp)), names, "float32", [])
        plans = plan_chunks(layout, grid, [name], {name: [(start, end)]})
        engine = InferenceEngine.from_options(inputs.loaded.model, inference,
                                              device=compute_device(inference.device, inference.precision),
                                              tracks=inputs.track_indices(names))
        first, last = start // grid.bin_bp, -(-end // grid.bin_bp)
        values = np.full((len(names), last - first), np.nan, dtype=np.float32)

        def keep(chunk, chunk_values: np.ndarray) -> None:
            c0 = chunk.start // grid.bin_bp
            lo, hi = max(first, c0), min(last, c0 + chunk.n_bins)
            values[:, lo - first:hi - first] = chunk_values[:, lo - c0:hi - c0]

        run_chunks(engine, WindowReader(inputs.genome, inputs.conservation, engine.context), keep, plans)
    finally:
        inputs.close()
    return RegionPrediction(values, names, name, first * grid.bin_bp, min(last * grid.bin_bp, sizes[name]),
                            grid.bin_bp)


Variant = Tuple[str, int, str, str]


def score_variants(variants: Union[PathLike, Iterable[Variant], "pd.DataFrame"], fasta: PathLike,
                   cons: Optional[PathLike], model: PathLike, **options: Any) -> "pd.DataFrame":
    """Score variants exactly as ``epiformer score-variants`` does, into a DataFrame of its TSV
    columns (chrom, pos, id, ref, alt, track, status, flags, ref_sum, alt_sum, diff, log2fc, sad,
    max_abs, l2, then the calibrated diff_p, log2fc_p, max_abs_p, ref_quantile, alt_quantile): one
    row per allele and track, every input variant with a status.

    The calibration scores a genome-wide null of ``null_size`` SNVs (10,000 by default) once per
    model, genome, conservation and scoring options, kept in the null cache (``epiformer cache
    list``) and reused by every later call and command-line run; ``null_path=`` keeps it in a file
    of your choosing instead, ``null_size=0`` gives the effects alone.

    Args:
        variants: a VCF/BCF path, a list of ``(chrom, pos, ref, alt)`` tuples (``pos`` 1-based,
            as in a VCF), or a DataFrame with those columns (and optionally ``id``).
        fasta, cons, model: as for the command.
        **options: :class:`~epiformer_cli.options.ScoreOptions` fields and its
            :class:`~epiformer_cli.options.InferenceOptions` fields by name (``tracks``,
            ``score_bins``, ``window_mode``, ``rc_average``, ``on_ref_mismatch``, ``no_cons``...).
    """
    import io

    import pandas as pd

    from epiformer_cli.jobs.score_variants import score_variants as score_job
    from epiformer_cli.options import ScoreOptions

    chosen = ScoreOptions.of(**{"device": "cpu", **options})
    if chosen.out_format not in (None, "tsv") or chosen.shard:
        from epiformer_cli.errors import UsageError

        raise UsageError("score_variants() returns a table: out_format and shard are for the command")
    text = io.StringIO()
    with tempfile.TemporaryDirectory(prefix="epiformer-") as folder:
        vcf = variants if isinstance(variants, (str, os.PathLike)) else _write_vcf(variants, Path(folder) / "in.vcf")
        score_job(vcf, fasta, cons, model, "-", options=chosen, stdout=text)
    text.seek(0)
    return pd.read_csv(text, sep="\t", dtype={"chrom": str, "id": str, "ref": str, "alt": str, "flags": str},
                       na_values=["NA"], keep_default_na=False)


def _write_vcf(variants, path: Path) -> Path:
    """A minimal VCF of ``(chrom, pos, ref, alt)`` rows (or a DataFrame of them), in the order given."""
    import pandas as pd

    if isinstance(variants, pd.DataFrame):
        ids = variants["id"] if "id" in variants else ["."] * len(variants)
        rows: Sequence = list(zip(variants["chrom"], variants["pos"], variants["ref"], variants["alt"], ids))
    else:
        rows = [(c, p, r, a, ".") for c, p, r, a in variants]
    with open(path, "w") as handle:
        handle.write("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
        for chrom, pos, ref, alt, vid in rows:
            handle.write(f"{chrom}\t{int(pos)}\t{vid}\t{ref}\t{alt}\t.\t.\t.\n")
    return path


def explain_regions(regions: Union[PathLike, Iterable[Tuple]], fasta: PathLike, cons: Optional[PathLike], model: PathLike,
            out: PathLike, **options: Any):
    """``epiformer explain --regions`` into the folder ``out``; returns ``contrib.npz`` read back
    (:class:`~epiformer_cli.explain.outputs.Contributions`: ``.table``, ``.row(i)`` -> (tracks, 4, L)
    matrix and (tracks, L) contributions, ``.sequence(i)``).

    ``regions``: a BED file, or ``(chrom, start, end[, name])`` tuples (0-based, half-open).
    ``options``: :class:`~epiformer_cli.options.ExplainOptions` fields by name (``method="gradient"``,
    ``tracks=[...]``, ``plot=0``, ``force=True``...); the device defaults to the CPU.
    """
    from epiformer_cli.explain.outputs import load_contributions
    from epiformer_cli.jobs.explain import explain as _explain
    from epiformer_cli.options import ExplainOptions

    chosen = ExplainOptions.of(**{"device": "cpu", **options})
    out = Path(out)
    if isinstance(regions, (str, os.PathLike)):
        _explain(fasta, cons, model, out, regions=regions, options=chosen)
    else:
        with tempfile.TemporaryDirectory(prefix="epiformer-") as folder:
            bed = Path(folder) / "regions.bed"
            bed.write_text("".join("\t".join(str(v) for v in region) + "\n" for region in regions))
            _explain(fasta, cons, model, out, regions=bed, options=chosen)
    return load_contributions(out / "contrib.npz")


def find_motifs(contrib: Union[PathLike, Sequence[PathLike]], out: PathLike, **options: Any) -> "pd.DataFrame":
    """``epiformer motifs --contrib ... --out out``; returns ``motifs.tsv`` as a DataFrame (one row per
    pattern: ``pattern``, ``track``, ``sign``, ``seqlets``, ``consensus``, ``factor``, ``match_1..3``,
    ``q_1..3``). The other files (``patterns.meme``, ``seqlets.bed``, ``report.html``...) are in ``out``.

    ``contrib``: one ``explain`` output folder or several (of one model and genome).
    ``options``: :class:`~epiformer_cli.options.MotifsOptions` fields by name (``tracks=[...]``,
    ``window=400``, ``max_seqlets=2000``, ``motif_db="h12.meme"``, ``force=True``).
    """
    import pandas as pd

    from epiformer_cli.jobs.motifs import motifs as _motifs
    from epiformer_cli.options import MotifsOptions

    folders = [contrib] if isinstance(contrib, (str, os.PathLike)) else list(contrib)
    _motifs(folders, out, options=MotifsOptions.of(**options))
    return pd.read_csv(Path(out) / "motifs.tsv", sep="\t", na_values=["NA"], keep_default_na=False)


def pseudobulk(fragments: Union[PathLike, Sequence[PathLike]], cell_types: PathLike, fasta: PathLike, out: PathLike,
               **options: Any) -> "pd.DataFrame":
    """``epiformer pseudobulk --fragments ... --cell-types TABLE --fasta FA --out out``; returns
    ``qc.tsv`` as a DataFrame (one row per cell type: ``cell_type``, ``cells``, ``fragments``,
    ``read_pairs``, ``duplicate_fraction``, ``fragments_per_cell``, ``top1pct_fraction``,
    ``nucleosome_ratio``, ``bigwig``). The bigWigs, ``targets.tsv`` and the figures are in ``out``.

    ``fragments``: one fragments file or several (``"donor1=path"`` names a file's sample).
    ``options``: :class:`~epiformer_cli.options.PseudobulkOptions` fields by name
    (``signal="coverage"``, ``normalize="none"``, ``count_duplicates=True``, ``min_cells=20``,
    ``min_fragments=100_000``, ``chroms=[...]``, ``force=True``).
    """
    import pandas as pd

    from epiformer_cli.jobs.pseudobulk import pseudobulk as _pseudobulk
    from epiformer_cli.options import PseudobulkOptions

    files = [fragments] if isinstance(fragments, (str, os.PathLike)) else list(fragments)
    _pseudobulk(files, cell_types, fasta, out, options=PseudobulkOptions.of(**options))
    return pd.read_csv(Path(out) / "qc.tsv", sep="\t", na_values=["NA"], keep_default_na=False)


def evaluate(model: PathLike, out: PathLike, *, data: Optional[PathLike] = None, targets: Optional[PathLike] = None,
             fasta: Optional[PathLike] = None, cons: Optional[PathLike] = None, regions: Optional[PathLike] = None,
             peaks: Optional[PathLike] = None, **options: Any) -> "pd.DataFrame":
    """``epiformer evaluate --model model --out out (--data STORE | --targets SHEET ...)``; returns
    ``metrics.tsv`` as a DataFrame (one row per track, then the ``mean`` row: ``track``, ``bins``,
    ``pearson``, ``spearman``, ``positive_bins``, ``auroc``, ``auprc``, ``peaks``, ``peak_pearson``,
    ``peak_spearman``, ``specificity``; NaN where a number is undefined). ``report.html``, the
    figures and ``track_correlation.tsv`` are in ``out``.

    ``data``: a prepared store (its test windows by default: the Pearson r is train's test r);
    ``targets``: a targets sheet of bigWigs, with ``fasta`` and ``cons``. ``options``:
    :class:`~epiformer_cli.options.EvaluateOptions` fields by name (``chroms=[...]``,
    ``top_fraction=0.01``, ``loci=3``, ``tracks=[...]``, ``rc_average=False``, ``device="cpu"``,
    ``force=True``).
    """
    import pandas as pd

    from epiformer_cli.jobs.evaluate import evaluate_model
    from epiformer_cli.options import EvaluateOptions

    evaluate_model(model, out, data=data, targets=targets, fasta=fasta, cons=cons, regions=regions, peaks=peaks,
                   options=EvaluateOptions.of(**options))
    return pd.read_csv(Path(out) / "metrics.tsv", sep="\t", na_values=["NA"], keep_default_na=False)
