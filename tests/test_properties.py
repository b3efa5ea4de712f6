"""Property tests for the places off-by-one errors hide: tiling and --regions, N-padded fetches,
reverse complement, VCF positions, and indel windows with their re-alignment.

Every property is checked against an oracle written from the documented rule (a Python string, a
per-base array, a chromosome with the variant applied), never against the code's own arithmetic.
Small geometries (bins of 1-16 bp) let hypothesis reach chromosome ends, window edges and bin
edges in every example. Files are made once per module. All coordinates are 0-based, half-open.

Related, and not repeated here: tests/test_tiling.py (a whole chromosome covered once by the
bins of the exact tiling), tests/test_genome.py (fetch length and padding on one chromosome),
tests/test_encoding.py (reverse-complement round trip, numpy = torch).
"""

from __future__ import annotations

import math
import types

import numpy as np
import pysam
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from epiformer_cli.data.encoding import N, decode_sequence, encode_sequence, reverse_complement
from epiformer_cli.data.prediction_store import PredictionStore, StoreLayout
from epiformer_cli.data.tiling import WindowGrid
from epiformer_cli.inference.engine import EngineStats
from epiformer_cli.inference.reader import WindowReader
from epiformer_cli.io.bigwig import BigWig, bin_values
from epiformer_cli.io.genome import Genome
from epiformer_cli.io.vcf import read_vcf
from epiformer_cli.jobs.export import export_predictions
from epiformer_cli.jobs.predict import plan_chunks, read_regions, run_chunks
from epiformer_cli.variants.output import tsv_rows, vcf_rows
from epiformer_cli.variants.scoring import Task, VariantScorer
from epiformer_cli.variants.windows import alt_index_of_ref, realign, window_start
from tests.helpers import float_tolerance, write_bigwig, write_fasta


def budget(examples: int) -> settings:
    """``examples`` per property, no deadline (files and the first torch import are slow once)."""
    return settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---- the module's genome and conservation track ------------------------------------------------
_rng = np.random.default_rng(7)


def _random_bases(n: int) -> str:
    return "".join(_rng.choice(list("ACGT"), n))


def _make_chr1() -> str:
    s = list(_random_bases(1000))
    s[100:180] = [b.lower() for b in s[100:180]]  # soft-masked
    s[300:340] = "N" * 40                          # a gap
    s[500], s[501], s[502] = "R", "y", "n"         # IUPAC codes read as N, lower-case n too
    return "".join(s)


#: FASTA name -> sequence as written (soft-masked, N, IUPAC); a 1 bp chromosome too.
SEQS = {"chr1": _make_chr1(), "chr2": _random_bases(37), "chrM": _random_bases(16), "chr3": "g"}
#: what every fetch must read: upper case, anything but ACGT -> N
TRUTH = {c: "".join(b if b in "ACGT" else "N" for b in s.upper()) for c, s in SEQS.items()}

#: the conservation bigWig: its names are aliases (1, 2, MT), it lacks chr3, and its chr2 is
#: shorter than the FASTA's (another assembly's header): those bases have no data.
BW_NAMES = {"chr1": "1", "chr2": "2", "chrM": "MT"}
BW_SIZES = {"1": 1000, "2": 30, "MT": 16}


def _make_intervals(size: int):
    """Runs of 1-20 bp with values k/8 (exact in float32), separated by gaps of 0-10 bp."""
    out, pos = [], int(_rng.integers(0, 5))
    while pos < size:
        end = min(size, pos + int(_rng.integers(1, 21)))
        out.append((pos, end, float(_rng.integers(1, 80)) / 8))
        pos = end + int(_rng.integers(0, 11))
    return out


BW_INTERVALS = {name: _make_intervals(size) for name, size in BW_SIZES.items()}
SEQS_LEN = {c: len(s) for c, s in SEQS.items()}


def cons_truth(chrom: str, start: int, end: int, missing: float = 0.0) -> np.ndarray:
    """The documented per-base reading: interval values, ``missing`` wherever the file has no data."""
    per_base = np.full(SEQS_LEN[chrom], np.nan)
    name = BW_NAMES.get(chrom)
    if name is not None:
        for s, e, v in BW_INTERVALS[name]:
            per_base[s:e] = v
    out = np.array([per_base[p] if 0 <= p < len(per_base) else np.nan for p in range(start, end)], dtype=np.float64)
    return np.where(np.isnan(out), missing, out).astype(np.float32)


def truth_slice(chrom: str, start: int, end: int) -> str:
    seq = TRUTH[chrom]
    return "".join(seq[p] if 0 <= p < len(seq) else "N" for p in range(start, end))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("properties")
    plain = write_fasta(folder / "g.fa", SEQS, width=7)
    crlf = write_fasta(folder / "crlf.fa", SEQS, width=13, newline="\r\n")
    bgz = folder / "g.fa.gz"
    pysam.tabix_compress(str(plain), str(bgz))
    bw = write_bigwig(folder / "cons.bw", BW_SIZES, BW_INTERVALS)
    genomes = {"plain": Genome(plain), "crlf": Genome(crlf), "bgzip": Genome(bgz)}
    cons = BigWig(bw, "conservation bigWig")
    cons.bind(list(SEQS), "g.fa")
    return types.SimpleNamespace(folder=folder, fasta=plain, genome=genomes["plain"], genomes=genomes, cons=cons)


chroms = st.sampled_from(list(SEQS))


@st.composite
def grids(draw, max_bin: int = 16, min_crop_bins: int = 0):
    """A small window geometry: bins of 1-16 bp, 0-4 cropped bins a side, 1-8 output bins."""
    bin_bp = draw(st.sampled_from([b for b in (1, 2, 4, 8, 16) if b <= max_bin]))
    crop_bins = draw(st.integers(min_crop_bins, 4))
    out_bins = draw(st.integers(1, 8))
    return WindowGrid(window_bp=(out_bins + 2 * crop_bins) * bin_bp, crop_bp=crop_bins * bin_bp, bin_bp=bin_bp)


# ==== tiling ====================================================================================
@budget(150)
@given(length=st.integers(1, 3000), grid=grids())
def test_every_base_has_one_window_and_one_bin_and_no_window_is_empty(length, grid):
    windows = list(grid.tile("c", length))
    owner = np.full(length, -1)
    for w in windows:
        kept = grid.bins_in_chrom(w, length)
        assert kept >= 1  # the tiling has no window whose outputs all lie past the end
        assert (w.start, w.end) == (w.out_start - grid.crop_bp, w.out_end + grid.crop_bp)
        assert w.out_end - w.out_start == grid.out_bp and w.end - w.start == grid.window_bp
        for b, s in enumerate(grid.bin_starts(w)[:kept]):
            assert (owner[s:s + grid.bin_bp] == -1).all()
            owner[s:s + grid.bin_bp] = w.index * grid.out_bins + b
    assert (owner >= 0).all()
    positions = np.arange(length)
    # window_index_for agrees with the owner of every base, and the bin inside it too
    index = np.array([grid.window_index_for(int(p)) for p in positions])
    bins = (positions - index * grid.out_bp) // grid.bin_bp
    np.testing.assert_array_equal(index * grid.out_bins + bins, owner)
    assert windows[0].start == -grid.crop_bp and windows[-1].out_end >= length > windows[-1].out_start


@budget(80)
@given(chrom=chroms, grid=grids(), context=st.integers(0, 5), data=st.data())
def test_window_inputs_are_the_windows_interval_padded_with_n_and_zero(files, chrom, grid, context, data):
    """WindowReader slices each window out of one read: it must equal a fetch of exactly
    ``[start - context, end + context)`` (N / conservation 0 outside the chromosome)."""
    length = SEQS_LEN[chrom]
    n = grid.n_windows(length)
    chosen = data.draw(st.lists(st.integers(0, n + 1), min_size=1, max_size=4))  # may repeat, may run past the end
    windows = [grid.window(chrom, i) for i in chosen]
    codes, cons = WindowReader(files.genome, files.cons, context).windows(chrom, [w.start for w in windows],
                                                                           grid.window_bp)
    assert codes.shape == cons.shape == (len(windows), grid.window_bp + 2 * context)
    for row, w in enumerate(windows):
        assert decode_sequence(codes[row]) == truth_slice(chrom, w.start - context, w.end + context)
        np.testing.assert_array_equal(cons[row], cons_truth(chrom, w.start - context, w.end + context))


class _PositionEngine:
    """Stands in for the model in ``run_chunks``: output bin b of a window is the conservation of
    its first base, and the fake reader's conservation is the genome coordinate (+ a chromosome
    offset), so every stored value says which base of which chromosome it was predicted for."""

    def __init__(self, grid: WindowGrid, batch_size: int):
        self.grid = grid
        self.config = types.SimpleNamespace(seq_len=grid.window_bp)
        self.tracks = [0]
        self.batch_size = batch_size
        self.stats = EngineStats()
        self.batch_sizes = []

    def predict_stream(self, batches):
        g = self.grid
        for meta, codes, cons in batches:
            self.batch_sizes.append(len(codes))
            assert codes.shape == cons.shape == (len(codes), g.window_bp)
            out = cons[:, g.crop_bp:g.crop_bp + g.out_bp:g.bin_bp][:, None, :]
            yield meta, np.ascontiguousarray(out, dtype=np.float32)


class _PositionReader:
    """Reads conservation = genome coordinate + a per-chromosome offset (bases all A)."""

    context = 0

    def __init__(self, offsets):
        self.offsets = offsets

    def read(self, chrom, start, end):
        pos = np.arange(start, end) + self.offsets[chrom]
        return np.zeros(pos.shape, dtype=np.uint8), pos.astype(np.float32)


@st.composite
def region_sets(draw, sizes):
    """None (whole genome) or BED lines on some chromosomes: overlapping, adjacent, empty, nested."""
    if draw(st.booleans()) and draw(st.booleans()):
        return None
    lines = []
    for chrom, size in sizes.items():
        for _ in range(draw(st.integers(0, 4))):
            start = draw(st.integers(0, size))
            end = draw(st.integers(start, min(size, start + draw(st.sampled_from([0, 1, 3, 17, 60, 400])))))
            lines.append((chrom, start, end))
            if draw(st.booleans()):  # one that touches it (adjacent) or repeats it
                start = draw(st.sampled_from([start, end]))
                lines.append((chrom, start, draw(st.integers(start, size))))
    lines = draw(st.permutations(lines))  # BED files are not always sorted
    if not any(e > s for _, s, e in lines):
        chrom = draw(st.sampled_from(list(sizes)))
        start = draw(st.integers(0, sizes[chrom] - 1))
        lines.append((chrom, start, start + 1))
    return lines


@budget(40)
@given(data=st.data(), grid=grids(), chunk_windows=st.integers(1, 4), batch_size=st.integers(1, 5),
       lengths=st.lists(st.integers(1, 700), min_size=1, max_size=3))
def test_predict_stores_and_exports_each_bin_from_its_own_window(tmp_path_factory, data, grid, chunk_windows,
                                                                 batch_size, lengths):
    """The predict pipeline minus the model: plan (with or without --regions), batches across chunk
    boundaries, chunk files, bigWig export. Every stored bin must hold the value predicted for its
    own first base; with --regions exactly the bins overlapping a region (merged or not) are
    computed and written, from exactly the windows holding them."""
    sizes = {f"c{i}": n for i, n in enumerate(lengths)}
    offsets = {c: 10_000 * (i + 1) for i, c in enumerate(sizes)}  # tells chromosomes apart
    folder = tmp_path_factory.mktemp("predict")
    raw = data.draw(region_sets(sizes))
    region_map = None
    use = list(sizes)
    if raw is not None:
        bed = folder / "regions.bed"
        bed.write_text("".join(f"{c}\t{s}\t{e}\n" for c, s, e in raw))
        region_map = read_regions(bed, sizes)
        use = [c for c in sizes if c in region_map]
        for chrom, merged in region_map.items():  # sorted, disjoint, not touching, same bases
            assert all(e1 < s2 for (_, e1), (s2, _) in zip(merged, merged[1:]))
            covered = np.zeros(sizes[chrom], dtype=bool)
            for s, e in merged:
                covered[s:e] = True
            raw_covered = np.zeros(sizes[chrom], dtype=bool)
            for c, s, e in raw:
                if c == chrom:
                    raw_covered[s:e] = True
            np.testing.assert_array_equal(covered, raw_covered)
    skeleton = StoreLayout(sizes, grid.window_bp, grid.crop_bp, grid.bin_bp, chunk_windows, ["t"], "float32", [])
    plans = plan_chunks(skeleton, grid, use, region_map)
    layout = StoreLayout(sizes, grid.window_bp, grid.crop_bp, grid.bin_bp, chunk_windows, ["t"], "float32",
                         [(p.chunk.chrom, p.chunk.index) for p in plans])
    store = PredictionStore.create(folder / "store", layout, {"test": True})
    engine = _PositionEngine(grid, batch_size)
    computed = run_chunks(engine, _PositionReader(offsets), store.write, plans)
    assert all(0 < b <= batch_size for b in engine.batch_sizes) and sum(engine.batch_sizes) == computed

    for chrom, size in sizes.items():
        n_bins = -(-size // grid.bin_bp)
        bin_start = np.arange(n_bins) * grid.bin_bp
        if raw is None:
            wanted = np.ones(n_bins, dtype=bool)
        else:  # overlapping a raw (unmerged) region: [s, e) meets [b, b + bin)
            wanted = np.zeros(n_bins, dtype=bool)
            for c, s, e in raw:
                if c == chrom and e > s:
                    wanted |= (bin_start < e) & (bin_start + grid.bin_bp > s)
        stored = np.full(n_bins, np.nan)
        chrom_plans = [p for p in plans if p.chunk.chrom == chrom]
        for p in chrom_plans:
            c = p.chunk
            values = store.read(c)[0]
            b0 = c.start // grid.bin_bp
            assert np.isnan(stored[b0:b0 + c.n_bins]).all()  # chunks do not overlap
            stored[b0:b0 + c.n_bins] = values
        kept = ~np.isnan(stored)
        np.testing.assert_array_equal(kept, wanted)
        np.testing.assert_array_equal(stored[kept], (bin_start + offsets[chrom])[kept])
        # the windows computed are exactly those holding a wanted bin
        needed = sorted(set((np.flatnonzero(wanted) // grid.out_bins).tolist()))
        assert sorted(int(w) for p in chrom_plans for w in p.windows) == needed

    out = folder / "pred.bw"
    export_predictions(store, out)
    bw = BigWig(out)
    assert list(bw.chrom_sizes.items()) == list(sizes.items())  # the FASTA's chromosomes, in its order
    for chrom, size in sizes.items():
        per_base = bw.values(chrom, 0, size, missing=math.nan)
        pos = np.arange(size)
        if raw is None:
            wanted_base = np.ones(size, dtype=bool)
        else:
            b = pos // grid.bin_bp
            wanted_base = np.zeros(size, dtype=bool)
            for c, s, e in raw:
                if c == chrom and e > s:
                    wanted_base |= (b * grid.bin_bp < e) & ((b + 1) * grid.bin_bp > s)
        np.testing.assert_array_equal(~np.isnan(per_base), wanted_base)
        expected = pos - pos % grid.bin_bp + offsets[chrom]
        np.testing.assert_array_equal(per_base[wanted_base], expected[wanted_base])
    bw.close()


# ==== fetching with N padding ==================================================================
@budget(150)
@given(chrom=chroms, start=st.integers(-1200, 1200), length=st.integers(0, 400),
       kind=st.sampled_from(["plain", "crlf", "bgzip"]))
@example(chrom="chr3", start=-1, length=3, kind="plain")
@example(chrom="chr1", start=999, length=2, kind="bgzip")
def test_fetch_is_the_reference_slice_with_n_outside(files, chrom, start, length, kind):
    codes = files.genomes[kind].fetch(chrom, start, start + length)
    assert codes.shape == (length,) and codes.dtype == np.uint8
    assert decode_sequence(codes) == truth_slice(chrom, start, start + length)


@budget(150)
@given(chrom=chroms, start=st.integers(-60, 1100), length=st.integers(0, 200),
       missing=st.sampled_from([0.0, math.nan, -1.0]))
@example(chrom="chr2", start=28, length=12, missing=0.0)  # past the bigWig's chr2, inside the FASTA's
@example(chrom="chr3", start=0, length=1, missing=math.nan)  # a chromosome the bigWig lacks
def test_bigwig_per_base_values_with_missing(files, chrom, start, length, missing):
    got = files.cons.values(chrom, start, start + length, missing=missing)
    assert got.shape == (length,) and got.dtype == np.float32
    np.testing.assert_array_equal(got, cons_truth(chrom, start, start + length, missing))


# ==== reverse complement =======================================================================
_COMPLEMENT_TEXT = {"A": "T", "C": "G", "G": "C", "T": "A"}


def text_reverse_complement(seq: str) -> str:
    """The textbook definition, on text: reverse, complement ACGT (any case), anything else N."""
    return "".join(_COMPLEMENT_TEXT.get(b.upper(), "N") for b in reversed(seq))


@budget(150)
@given(seq=st.text(alphabet="ACGTNacgtnRYKMSW-", max_size=301), tracks=st.integers(1, 3),
       bin_bp=st.sampled_from([1, 2, 3, 4, 8]), backend=st.sampled_from(["numpy", "torch"]))
def test_reverse_complement_moves_codes_conservation_and_bins_together(seq, tracks, bin_bp, backend):
    import torch

    length = len(seq) - len(seq) % bin_bp  # a window is whole bins
    seq = seq[:length]
    codes = encode_sequence(seq)
    cons = (np.arange(length, dtype=np.float32) * 3 + 1) % 17  # any per-base signal
    signal = np.arange(tracks * length, dtype=np.float32).reshape(tracks, length) ** 1.5 // 1
    targets = bin_values(signal, bin_bp, "sum")  # targets binned from a per-base signal
    args = (codes, cons, targets)
    if backend == "torch":
        args = tuple(torch.as_tensor(a) for a in args)
    rc = [np.asarray(x) for x in reverse_complement(*args)]
    assert decode_sequence(rc[0]) == text_reverse_complement(seq) == decode_sequence(
        encode_sequence(text_reverse_complement(seq)))
    assert rc[0].dtype == np.uint8 and rc[0].shape == (length,)
    np.testing.assert_array_equal(rc[0] == N, (codes == N)[::-1])  # N stays N, and only N is N
    np.testing.assert_array_equal(rc[1], cons[::-1])
    # bin i of the reverse strand is bin (bins - 1 - i) of the forward strand: binning the reversed
    # per-base signal gives exactly the reversed bins
    np.testing.assert_array_equal(rc[2], bin_values(signal[:, ::-1].copy(), bin_bp, "sum"))
    np.testing.assert_array_equal(rc[2], targets[:, ::-1])
    back = [np.asarray(x) for x in reverse_complement(*[torch.as_tensor(r) if backend == "torch" else r for r in rc])]
    for a, b in zip(back, (codes, cons, targets)):
        np.testing.assert_array_equal(a, b)
    if backend == "numpy":
        for a, b in zip(rc, (codes, cons, targets)):
            assert all(s >= 0 for s in a.strides) and not np.shares_memory(a, b)


@budget(60)
@given(rows=st.lists(st.text(alphabet="ACGTN", min_size=7, max_size=7), min_size=1, max_size=4),
       backend=st.sampled_from(["numpy", "torch"]))
def test_reverse_complement_of_a_batch_is_row_by_row(rows, backend):
    """(batch, length) inputs: only the last axis is reversed, rows never mix."""
    import torch

    codes = np.stack([encode_sequence(r) for r in rows])
    cons = np.arange(codes.size, dtype=np.float32).reshape(codes.shape)
    x = (codes, cons) if backend == "numpy" else (torch.as_tensor(codes), torch.as_tensor(cons))
    rc_codes, rc_cons, none = reverse_complement(*x)
    assert none is None
    for i, r in enumerate(rows):
        assert decode_sequence(np.asarray(rc_codes[i])) == text_reverse_complement(r)
        np.testing.assert_array_equal(np.asarray(rc_cons[i]), cons[i, ::-1])


# ==== VCF positions ============================================================================
@st.composite
def vcf_records(draw):
    """1-8 records anywhere on the module's genome (unsorted): REF from the FASTA, 1-3 ALTs."""
    out = []
    for i in range(draw(st.integers(1, 8))):
        chrom = draw(chroms)
        size = SEQS_LEN[chrom]
        pos = draw(st.one_of(st.integers(1, size), st.sampled_from([1, size])))
        ref_len = draw(st.integers(1, min(6, size - pos + 1)))
        ref = TRUTH[chrom][pos - 1:pos - 1 + ref_len]
        if draw(st.booleans()):
            ref = ref.lower()
        alts = draw(st.lists(st.text(alphabet="ACGT", min_size=1, max_size=5), min_size=1, max_size=3, unique=True))
        out.append((chrom, pos, f"v{i}", ref, alts))
    return out


@budget(60)
@given(records=vcf_records(), compressed=st.booleans())
def test_vcf_pos_becomes_start_once_and_round_trips_to_the_output(files, tmp_path_factory, records, compressed):
    folder = tmp_path_factory.mktemp("vcf")
    header = "##fileformat=VCFv4.2\n" + "".join(f"##contig=<ID={c},length={n}>\n" for c, n in SEQS_LEN.items())
    header += "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
    body = "".join(f"{c}\t{p}\t{i}\t{r}\t{','.join(a)}\t.\t.\t.\n" for c, p, i, r, a in records)
    path = folder / "in.vcf"
    path.write_text(header + body)
    if compressed:
        pysam.tabix_compress(str(path), str(folder / "in.vcf.gz"))
        path = folder / "in.vcf.gz"
    with read_vcf(path) as reader:
        got = list(reader.records())
    assert len(got) == len(records)
    tasks = {}
    for record, (chrom, pos, ident, ref, alts) in zip(got, records):
        assert [(a.allele, a.alt) for a in record.alleles] == list(enumerate(alts, start=1))
        for a in record.alleles:
            assert (a.chrom, a.pos, a.id, a.ref) == (chrom, pos, ident, ref.upper())
            assert a.start == pos - 1 and a.end == a.start + len(ref)
            # the REF interval is exactly the FASTA's REF bases
            assert decode_sequence(files.genome.fetch(chrom, a.start, a.end)) == ref.upper()
            assert ("lowercase" in a.flags) == (ref != ref.upper())
            tasks[(a.record, a.allele)] = Task(a, status="ref_mismatch")
    # the output's pos column is the input POS (1-based), record by record and ALT by ALT
    rows = [line.split("\t") for line in tsv_rows(got, tasks, ["t"]).splitlines()]
    assert [(r[0], int(r[1]), r[2], r[3], r[4]) for r in rows] == [
        (c, p, i, r.upper(), alt) for c, p, i, r, alts in records for alt in alts]
    lines = [line.split("\t") for line in vcf_rows(got, tasks, ["t"]).splitlines()]
    assert [(cols[0], int(cols[1]), cols[3]) for cols in lines] == [(c, p, r) for c, p, _, r, _ in records]


# ==== indel windows ============================================================================
class _RecordingEngine:
    """Stands in for the inference engine in variant scoring: keeps every input row it is given and
    predicts, for output bin b, the conservation of the bin's first base (a function of position
    when conservation is the genome coordinate), or the row number."""

    context = 0

    def __init__(self, config, mode: str):
        self.config = config
        self.mode = mode
        self.rows = []

    def predict(self, codes, cons):
        cfg = self.config
        out = np.empty((len(codes), 1, cfg.out_bins), dtype=np.float32)
        for i, (c, k) in enumerate(zip(codes, cons)):
            assert c.shape == k.shape == (cfg.seq_len,)
            out[i, 0] = len(self.rows) if self.mode == "row" else k[cfg.crop_bp::cfg.bin_size][:cfg.out_bins]
            self.rows.append((c.copy(), k.copy()))
        return out


class _CapturingScorer(VariantScorer):
    """The real scorer, keeping (window start, reference and realigned alternative predictions)."""

    def _finish(self, task, start, ref_pred, alt_pred):
        self.finished[id(task)] = (start, ref_pred.copy(), alt_pred.copy())
        super()._finish(task, start, ref_pred, alt_pred)


class _PositionTrack:
    """A conservation track whose value at every coordinate (also outside the chromosome) is the
    coordinate + 1: what a prediction carries through a window is then where it came from."""

    def values(self, chrom, start, end, missing=0.0):
        return np.arange(start + 1, end + 1, dtype=np.float32)


def _scorer(genome, conservation, geometry: WindowGrid, window_mode: str, engine_mode: str):
    cfg = types.SimpleNamespace(seq_len=geometry.window_bp, crop_bp=geometry.crop_bp, bin_size=geometry.bin_bp,
                                out_bins=geometry.out_bins, conservation="channel", n_tracks=1)
    engine = _RecordingEngine(cfg, engine_mode)
    scorer = _CapturingScorer(engine, WindowReader(genome, conservation), window_mode=window_mode, score_bins=1,
                              fast=False)
    scorer.finished = {}
    return scorer, engine


def alt_chromosome(chrom: str, start: int, ref_len: int, alt: str) -> str:
    return TRUTH[chrom][:start] + alt + TRUTH[chrom][start + ref_len:]


def alt_conservation(chrom: str, start: int, ref_len: int, alt_len: int) -> np.ndarray:
    """Per-base conservation of the alternative chromosome by the documented rule: ALT base k takes
    REF base k's conservation, inserted bases (k >= len(REF)) REF's last base's."""
    cons = cons_truth(chrom, 0, SEQS_LEN[chrom])
    allele = [cons[start + min(k, ref_len - 1)] for k in range(alt_len)]
    return np.concatenate([cons[:start], np.array(allele, dtype=np.float32), cons[start + ref_len:]])


@st.composite
def variants(draw, crop_bp: int, out_bp: int, count: int):
    """``count`` alleles on one chromosome, biased to its ends and to grid-window edges; REF is the
    FASTA's and REF/ALT are at most ``crop_bp`` long (longer ones are ``too_long``)."""
    chrom = draw(st.sampled_from(["chr1", "chr1", "chr2", "chrM", "chr3"]))
    size = SEQS_LEN[chrom]
    out = []
    for _ in range(count):
        anchor = draw(st.sampled_from(["any", "start", "end", "edge"]))
        if anchor == "any":
            start = draw(st.integers(0, size - 1))
        elif anchor == "start":
            start = draw(st.integers(0, min(size - 1, 2 * crop_bp)))
        elif anchor == "end":
            start = size - 1 - draw(st.integers(0, min(size - 1, 2 * crop_bp + out_bp)))
        else:
            edge = draw(st.integers(1, max(1, size // out_bp))) * out_bp
            start = min(size - 1, max(0, edge + draw(st.integers(-crop_bp, 1))))
        ref_len = draw(st.integers(1, min(crop_bp, size - start)))
        alt = draw(st.text(alphabet="ACGT", min_size=1, max_size=crop_bp))
        out.append((start, ref_len, alt))
    return chrom, out


def _alleles(chrom, specs):
    from epiformer_cli.io.vcf import Allele, classify

    out = []
    for i, (start, ref_len, alt) in enumerate(specs):
        ref = TRUTH[chrom][start:start + ref_len]
        out.append(Allele(i, 1, chrom, start + 1, start, start + ref_len, f"v{i}", ref, alt, classify(ref, alt)))
    return out


@st.composite
def scoring_cases(draw):
    """(geometry, window mode, chromosome, 1-4 alleles) for the scorer."""
    geometry = draw(grids(max_bin=8, min_crop_bins=1))
    mode = draw(st.sampled_from(["grid", "centered"]))
    chrom, specs = draw(variants(geometry.crop_bp, geometry.out_bp, draw(st.integers(1, 4))))
    return geometry, mode, chrom, specs


@budget(120)
@given(case=scoring_cases())
# a 6 bp deletion whose reference window ends 5 bp before chr2's end: the alt window reads 1 bp past it
@example(case=(WindowGrid(window_bp=24, crop_bp=8, bin_bp=4), "grid", "chr2", [(16, 7, "A")]))
# an insertion at the last base of chr1 and a deletion at its first, in one call
@example(case=(WindowGrid(window_bp=20, crop_bp=4, bin_bp=2), "centered", "chr1", [(999, 1, "CGTA"), (0, 4, "G")]))
def test_alt_window_is_the_alternative_chromosome_read_from_the_reference_windows_start(files, case):
    """Through the real scorer (windows grouped, deletions pulling in right flank, N padding at
    chromosome ends): the alt input is the window of the chromosome with the variant applied,
    read from the reference window's start; its conservation follows the documented rule."""
    geometry, mode, chrom, specs = case
    scorer, engine = _scorer(files.genome, files.cons, geometry, mode, "row")
    L, size = geometry.window_bp, SEQS_LEN[chrom]
    tasks = [scorer.check(a) for a in _alleles(chrom, specs)]
    assert [t.status for t in tasks] == ["ok"] * len(tasks)
    scorer.score(tasks)
    for task, (s, ref_len, alt) in zip(tasks, specs):
        w, ref_pred, alt_pred = scorer.finished[id(task)]
        assert w == task.window == window_start(mode, s, L, geometry.crop_bp, geometry.bin_bp)
        offset = s - w
        if mode == "grid":  # the window whose output holds the variant's first base
            assert geometry.crop_bp <= offset < geometry.crop_bp + geometry.out_bp
        ref_codes, ref_cons = engine.rows[int(ref_pred[0, 0])]
        alt_codes, alt_cons = engine.rows[int(alt_pred[0, 0])]
        assert decode_sequence(ref_codes) == truth_slice(chrom, w, w + L)
        np.testing.assert_array_equal(ref_cons, cons_truth(chrom, w, w + L))
        # the documented construction, piece by piece ...
        la, d = len(alt), len(alt) - ref_len
        assert len(alt_codes) == L and offset + la <= L
        assert decode_sequence(alt_codes[:offset]) == truth_slice(chrom, w, s)
        assert decode_sequence(alt_codes[offset:offset + la]) == alt
        assert decode_sequence(alt_codes[offset + la:]) == truth_slice(chrom, s + ref_len, w + L - d)
        # ... and as a whole: the alternative chromosome's window, N outside it
        alt_seq = alt_chromosome(chrom, s, ref_len, alt)
        assert decode_sequence(alt_codes) == "".join(alt_seq[p] if 0 <= p < len(alt_seq) else "N"
                                                     for p in range(w, w + L))
        chrom_cons = alt_conservation(chrom, s, ref_len, la)
        expected = np.array([chrom_cons[p] if 0 <= p < len(chrom_cons) else 0 for p in range(w, w + L)], np.float32)
        np.testing.assert_array_equal(alt_cons, expected)
        # edge_padded: some input base of the reference or of the alternative lies off the chromosome
        padded = w < 0 or w + L > size or w + L - d > size
        assert ("edge_padded" in task.flags) == padded, (w, L, d, size)


@st.composite
def tracer_cases(draw):
    """(crop_bp, out_bp, window mode, chromosome, one allele) with 1 bp bins."""
    crop_bp, out_bp = draw(st.integers(1, 12)), draw(st.integers(1, 40))
    mode = draw(st.sampled_from(["grid", "centered"]))
    chrom, specs = draw(variants(crop_bp, out_bp, 1))
    return crop_bp, out_bp, mode, chrom, specs


@budget(120)
@given(case=tracer_cases())
@example(case=(4, 10, "grid", "chr1", [(6, 1, "ACGT")]))  # an insertion pushes bases 7-9 past the span
@example(case=(4, 10, "grid", "chr1", [(3, 4, "T")]))     # a deletion: bases 4-6 take base 3's value
@example(case=(3, 5, "centered", "chr3", [(0, 1, "TTT")]))  # a 1 bp chromosome
def test_realigned_alt_prediction_of_position_is_the_reference_position(files, case):
    """1 bp bins and a prediction equal to the position each input base came from (conservation =
    coordinate + 1): after re-alignment the alt prediction must equal the reference prediction at
    every reference base -- bases after the variant shifted back by len(ALT) - len(REF), inserted
    bases dropped -- except deleted bases, which take the junction's (last ALT base's) value, and
    bases whose counterpart was pushed past the predicted span, which take the last predicted one."""
    crop_bp, out_bp, mode, chrom, specs = case
    geometry = WindowGrid(window_bp=out_bp + 2 * crop_bp, crop_bp=crop_bp, bin_bp=1)
    (s, ref_len, alt), = specs
    scorer, engine = _scorer(files.genome, _PositionTrack(), geometry, mode, "position")
    task = scorer.check(_alleles(chrom, specs)[0])
    scorer.score([task])
    w, ref_pred, alt_pred = scorer.finished[id(task)]
    la, d, offset = len(alt), len(alt) - ref_len, s - w
    m = min(ref_len, la)
    ref_positions = w + crop_bp + np.arange(out_bp)        # genome coordinate of each output base
    np.testing.assert_array_equal(ref_pred[0], ref_positions + 1)

    def source(j):  # genome coordinate the alt window's base j came from (documented construction)
        if j < offset:
            return w + j
        if j < offset + la:
            return s + min(j - offset, ref_len - 1)
        return w + j - d

    last = crop_bp + out_bp - 1  # last predicted alt base
    expected = []
    for q in ref_positions:
        if q < s + m:
            j = q - w
        elif q < s + ref_len:       # deleted: the junction
            j = offset + la - 1
        else:                       # after the variant: shifted
            j = q - w + d
        expected.append(source(min(j, last)) + 1)
    np.testing.assert_array_equal(alt_pred[0], np.array(expected, dtype=np.float32))
    # stated plainly: nothing moves away from the variant unless it was pushed past the span
    unchanged = (ref_positions < s + m) | ((ref_positions >= s + ref_len) & (ref_positions - w + d <= last))
    np.testing.assert_array_equal(alt_pred[0][unchanged], ref_pred[0][unchanged])


@budget(200)
@given(data=st.data(), geometry=grids(min_crop_bins=1), tracks=st.integers(1, 2))
def test_realign_of_wider_bins_is_the_mean_of_its_bases_counterparts(data, geometry, tracks):
    """Bins of 2-16 bp: each reference bin is the mean, over its bases, of the alt bin holding each
    base's counterpart (README rule); bins clear of the variant take their alt bin unchanged (one
    bin further by each whole bin of shift)."""
    crop, bin_bp, out_bins = geometry.crop_bp, geometry.bin_bp, geometry.out_bins
    offset = data.draw(st.integers(crop, crop + geometry.out_bp - 1))
    ref_len = data.draw(st.integers(1, crop))
    alt_len = data.draw(st.integers(1, crop))
    alt_pred = np.asarray(data.draw(st.lists(st.integers(0, 1000), min_size=tracks * out_bins,
                                             max_size=tracks * out_bins)), dtype=np.float32)
    alt_pred = alt_pred.reshape(tracks, out_bins) / 4
    got = realign(alt_pred, offset, ref_len, alt_len, geometry.window_bp, crop, bin_bp)
    assert got.shape == alt_pred.shape and got.dtype == np.float32
    if ref_len == alt_len:
        np.testing.assert_array_equal(got, alt_pred)
        return
    d, m = alt_len - ref_len, min(ref_len, alt_len)
    expected = np.zeros_like(alt_pred, dtype=np.float64)
    for b in range(out_bins):
        for p in range(crop + b * bin_bp, crop + (b + 1) * bin_bp):
            j = p if p < offset + m else offset + alt_len - 1 if p < offset + ref_len else p + d
            j = min(max(j, crop), crop + geometry.out_bp - 1)
            expected[:, b] += alt_pred[:, (j - crop) // bin_bp] / bin_bp
    # realign averages in float64 and rounds once to float32: within u of each value (the bound's 2u
    # is a relative tolerance here); a base mapped to the wrong bin moves a mean by 1/64 or more (values
    # are quarters, bins at most 16 bp)
    np.testing.assert_allclose(got, expected, rtol=float_tolerance(1.0), atol=0)
    for b in range(out_bins):
        lo, hi = crop + b * bin_bp, crop + (b + 1) * bin_bp
        if hi <= offset + m:  # wholly before the change
            np.testing.assert_array_equal(got[:, b], alt_pred[:, b])
        elif lo >= offset + ref_len and d % bin_bp == 0 and 0 <= b + d // bin_bp < out_bins:
            np.testing.assert_array_equal(got[:, b], alt_pred[:, b + d // bin_bp])


@budget(200)
@given(offset=st.integers(0, 50), ref_len=st.integers(1, 12), alt_len=st.integers(1, 12))
def test_alt_index_of_ref_keeps_order_drops_inserted_and_merges_deleted(offset, ref_len, alt_len):
    ref_pos = np.arange(0, offset + ref_len + 30)
    j = alt_index_of_ref(offset, ref_len, alt_len, ref_pos)
    assert (np.diff(j) >= 0).all()  # order is kept
    d, m = alt_len - ref_len, min(ref_len, alt_len)
    np.testing.assert_array_equal(j[:offset + m], ref_pos[:offset + m])
    np.testing.assert_array_equal(j[offset + ref_len:], ref_pos[offset + ref_len:] + d)
    images = set(j.tolist())
    alt_positions = set(range(0, int(j[-1]) + 1))
    # alt bases with no reference counterpart are exactly the inserted ones
    assert alt_positions - images == set(range(offset + ref_len, offset + alt_len))
    # deleted reference bases all land on the junction (the last ALT base)
    assert set(j[offset + m:offset + ref_len].tolist()) <= {offset + alt_len - 1}
