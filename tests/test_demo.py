"""Tests of the demo genome generator (epiformer_cli/demo): determinism, file formats, and that the
tracks and variants follow the stated rules. One demo is generated per module."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyBigWig
import pysam
import pytest

from epiformer_cli import __version__
from epiformer_cli.data.encoding import encode_sequence
from epiformer_cli.demo import DemoData, generate_demo
from epiformer_cli.demo import rules
from epiformer_cli.demo.pwm import MOTIF_DIR, read_jaspar, window_score
from epiformer_cli.errors import UsageError

CHROMS = ["chr1", "chr2", "chr3", "chrX"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    calls = []
    out = tmp_path_factory.mktemp("demo") / "demo"
    data = generate_demo(out, seed=0, progress=lambda advance=1, total=None, **status: calls.append((advance, total, status)))
    return data, calls


@pytest.fixture(scope="module")
def demo(demo_run) -> DemoData:
    return demo_run[0]


@pytest.fixture(scope="module")
def fasta(demo):
    fa = pysam.FastaFile(str(demo.fasta))
    yield fa
    fa.close()


def _digests(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _read_bed(path: Path):
    rows = []
    for line in path.read_text().splitlines():
        f = line.split("\t")
        rows.append((f[0], int(f[1]), int(f[2]), *f[3:]))
    return rows


def _mean(bw, chrom: str, start: int, end: int) -> float:
    v = np.asarray(bw.values(chrom, start, end), dtype=np.float64)
    return float(np.nan_to_num(v, nan=0.0).mean())


# ------------------------------------------------------------------------------ determinism


def test_same_seed_gives_byte_identical_files(demo):
    """Regenerate over the module's demo folder: every file must come back byte for byte (this
    also checks that an existing demo folder is replaced cleanly)."""
    before = _digests(demo.out_dir)
    assert len(before) >= 14
    again = generate_demo(demo.out_dir, seed=0)
    assert _digests(again.out_dir) == before
    assert sorted(p.name for p in demo.out_dir.parent.iterdir()) == [demo.out_dir.name]  # no staging left


def test_other_seed_gives_other_files(demo, tmp_path):
    other = generate_demo(tmp_path / "other", seed=1)
    first, second = _digests(demo.out_dir), _digests(other.out_dir)
    for name in ("genome.fa", "targets/microglia.bw", "variants.vcf.gz", "conservation.bw"):
        assert first[name] != second[name]
    assert json.loads(other.manifest.read_text())["seed"] == 1


def test_bad_seed_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError):
        generate_demo(tmp_path / "x", seed=-1)
    assert not (tmp_path / "x").exists()


def test_progress_reports_every_stage(demo_run):
    _, calls = demo_run
    # the one progress shape: one unit a stage, each call naming the total and the stage finished
    assert [c[0] for c in calls] == [1] * len(calls) and {c[1] for c in calls} == {len(calls)}
    assert [c[2]["stage"] for c in calls][-1] == "tables" and len({c[2]["stage"] for c in calls}) == len(calls)


# ------------------------------------------------------------------------------ genome


def test_fasta_chromosomes_case_and_gaps(demo, fasta):
    assert list(fasta.references) == CHROMS
    assert dict(zip(fasta.references, fasta.lengths)) == demo.chrom_sizes
    assert all(size % 128 for size in demo.chrom_sizes.values())
    assert 4_000_000 <= sum(demo.chrom_sizes.values()) <= 5_000_000
    lines = demo.fasta.read_text().splitlines()
    assert lines[0] == ">chr1" and len(lines[1]) == 60
    assert fasta.fetch("chr1", 0, 100) == "N" * 100  # Ns at a chromosome start
    seq = fasta.fetch("chr3")
    assert any(ch.islower() for ch in seq)  # soft-masked repeats
    assert "N" * 1000 in seq  # an N gap
    gc = [np.isin(encode_sequence(seq[i : i + 100_000]), [1, 2]).mean() for i in range(0, 900_000, 100_000)]
    assert max(gc) - min(gc) > 0.05  # isochore-like G+C variation


def test_split_covers_every_chromosome_once(demo):
    split = demo.train_chroms + demo.valid_chroms + demo.test_chroms
    assert sorted(split) == sorted(CHROMS)
    elements = _read_bed(demo.elements)
    for chrom in CHROMS:
        assert sum(r[0] == chrom for r in elements) >= 150


# ------------------------------------------------------------------------------ bigWigs


@pytest.mark.parametrize("which", ["conservation", "microglia", "neuron", "oligodendrocyte"])
def test_bigwigs_match_the_fasta(demo, which):
    path = demo.conservation if which == "conservation" else demo.targets[which]
    bw = pyBigWig.open(str(path))
    try:
        assert list(bw.chroms().items()) == list(demo.chrom_sizes.items())
        for chrom in CHROMS:
            values = np.array([iv[2] for iv in bw.intervals(chrom)])
            assert values.size and np.isfinite(values).all()
            assert values.min() >= 0
            if which == "conservation":
                assert values.max() <= 1.0
        # N gaps are not written: missing there
        assert np.isnan(bw.values("chr1", 0, 10_000)).all()
    finally:
        bw.close()


def test_conservation_high_over_elements_low_elsewhere(demo):
    bw = pyBigWig.open(str(demo.conservation))
    try:
        elements = [r for r in _read_bed(demo.elements) if not r[3].startswith("lone_")][:200]
        lone = [r for r in _read_bed(demo.elements) if r[3].startswith("lone_")][:50]
        inside = np.mean([_mean(bw, c, s, e) for c, s, e, *_ in elements])
        outside = np.mean([_mean(bw, c, e + 1_000, e + 1_300) for c, s, e, *_ in elements])
        assert inside > 0.6 and outside < 0.2
        assert np.mean([_mean(bw, c, s, e) for c, s, e, *_ in lone]) < 0.2
    finally:
        bw.close()


def _background_windows(demo, n=300):
    """300 bp windows >= 2 kb from every element and hit, outside gaps and the blacklist."""
    blocked = {c: np.zeros(size, bool) for c, size in demo.chrom_sizes.items()}
    for path, pad in ((demo.elements, 2_000), (demo.motif_hits, 2_000), (demo.blacklist, 0)):
        for chrom, s, e, *_ in _read_bed(path):
            blocked[chrom][max(0, s - pad) : e + pad] = True
    rng = np.random.default_rng(0)
    out = []
    while len(out) < n:
        chrom = CHROMS[int(rng.integers(4))]
        start = int(rng.integers(20_000, demo.chrom_sizes[chrom] - 20_000))
        if not blocked[chrom][start : start + 300].any():
            out.append((chrom, start, start + 300))
    return out


def test_targets_follow_the_cell_type_rules(demo):
    bws = {t: pyBigWig.open(str(p)) for t, p in demo.targets.items()}
    try:
        elements = _read_bed(demo.elements)
        by_class = {}
        for chrom, s, e, cls, *_ in elements:
            by_class.setdefault(cls, []).append((chrom, s, e))
        mean = {
            cls: {t: np.mean([_mean(bw, c, s, e) for c, s, e in rows]) for t, bw in bws.items()}
            for cls, rows in by_class.items()
        }
        bg = {t: np.mean([_mean(bw, *w) for w in _background_windows(demo)]) for t, bw in bws.items()}
        assert all(0.05 < bg[t] < 2.0 for t in bg)
        for t in rules.TRACKS:  # CTCF: open everywhere
            assert mean["ctcf"][t] > 10 * bg[t]
        for cls in ("microglia_spi1", "microglia_cebpb", "microglia_coop"):
            assert mean[cls]["microglia"] > 10 * bg["microglia"]
            assert mean[cls]["microglia"] > 5 * max(mean[cls]["neuron"], mean[cls]["oligodendrocyte"])
            assert mean[cls]["neuron"] < 3 * bg["neuron"]
            assert mean[cls]["oligodendrocyte"] < 3 * bg["oligodendrocyte"]
        # cooperation: SPI1 with CEBPB beats either alone
        assert mean["microglia_coop"]["microglia"] > 1.3 * max(mean["microglia_spi1"]["microglia"], mean["microglia_cebpb"]["microglia"])
        assert mean["neuron_ap1"]["neuron"] > 10 * bg["neuron"]
        assert mean["neuron_ap1"]["oligodendrocyte"] < 3 * bg["oligodendrocyte"]
        assert mean["oligodendrocyte_gata"]["oligodendrocyte"] > 10 * bg["oligodendrocyte"]
        assert mean["oligodendrocyte_gata"]["neuron"] < 3 * bg["neuron"]
        assert mean["oligodendrocyte_gata"]["microglia"] < 3 * bg["microglia"]
        # unconserved lone sites open chromatin too: the rule reads sequence, not conservation
        for t in rules.TRACKS:
            assert mean["lone_CTCF"][t] > 10 * bg[t]
        assert mean["lone_GATA1"]["oligodendrocyte"] > 10 * bg["oligodendrocyte"]
        # conserved decoys with broken motifs stay closed
        for t in rules.TRACKS:
            assert mean["decoy"][t] < 3 * bg[t]
        # the blacklisted artefact is huge in every track
        artefacts = [r for r in _read_bed(demo.blacklist) if r[3] == "high_signal_artefact"]
        assert artefacts
        for t, bw in bws.items():
            c, s, e, _ = artefacts[0]
            assert _mean(bw, c, s + 600, e - 600) > 100
    finally:
        for bw in bws.values():
            bw.close()


def test_tracks_are_the_stated_function_of_sequence_plus_noise(demo, fasta):
    """Rebuild the expected coverage of the test chromosome from its sequence and motif_hits.bed
    with the published rule; the noisy tracks must correlate with it at 128 bp (log scale)."""
    motifs = rules.load_motifs()
    index = {m.name: i for i, m in enumerate(motifs)}
    chrom = demo.test_chroms[0]
    codes = encode_sequence(fasta.fetch(chrom))
    rows = [r for r in _read_bed(demo.motif_hits) if r[0] == chrom]
    hits = rules.Hits(
        np.array([r[1] for r in rows], np.int64),
        np.array([index[r[3]] for r in rows], np.int64),
        np.array([1 if r[5] == "+" else -1 for r in rows], np.int64),
        np.array([int(r[4]) / 1000 for r in rows]),
    )
    expected = rules.expected_coverage(codes, hits, motifs)
    n = codes.size // 128 * 128
    ok = (codes[:n].reshape(-1, 128) < 4).all(axis=1)
    for track, path in demo.targets.items():
        bw = pyBigWig.open(str(path))
        observed = np.nan_to_num(np.asarray(bw.values(chrom, 0, n)), nan=0.0)
        bw.close()
        e = np.log1p(expected[track][:n].reshape(-1, 128).mean(axis=1))[ok]
        o = np.log1p(observed.reshape(-1, 128).mean(axis=1))[ok]
        assert np.corrcoef(e, o)[0, 1] > 0.85, track


# ------------------------------------------------------------------------------ tables


def test_targets_sheet(demo):
    lines = demo.targets_sheet.read_text().splitlines()
    assert lines[0].split("\t") == ["name", "path", "scale", "clip", "stat"]
    rows = [line.split("\t") for line in lines[1:]]
    assert [r[0] for r in rows] == list(demo.tracks) == list(rules.TRACKS)
    for name, path, scale, clip, stat in rows:
        assert (demo.targets_sheet.parent / path).resolve() == demo.targets[name].resolve()
        assert float(scale) > 0 and float(clip) > 0 and stat == "mean"


def test_single_cell_fragments_follow_the_tracks(demo):
    """The fragments file is what Cell Ranger ATAC writes (sorted, bgzipped, tabix-indexed, five
    columns), its cells are the table's, and each cell type's insertions follow its own track."""
    from epiformer_cli.demo.fragments import CELLS

    table = [line.split("\t") for line in demo.cell_types.read_text().splitlines()]
    assert table[0] == ["barcode", "cell_type"]
    cells = {b: t for b, t in table[1:]}
    assert len(cells) == len(table) - 1 == sum(CELLS.values())
    assert {t: list(cells.values()).count(t) for t in rules.TRACKS} == CELLS
    tabix = pysam.TabixFile(str(demo.fragments))
    assert set(tabix.contigs) == set(CHROMS)
    rows = [line.split("\t") for line in tabix.fetch("chr2")]
    starts = [int(r[1]) for r in rows]
    assert starts == sorted(starts) and all(len(r) == 5 and int(r[2]) > int(r[1]) for r in rows)
    ambient = sum(r[3] not in cells for r in rows) / len(rows)
    assert 0.02 < ambient < 0.08  # about AMBIENT_FRACTION of the cells' fragments
    with pyBigWig.open(str(demo.targets["neuron"])) as bw:
        size = bw.chroms("chr2") // 1280 * 1280
        track = np.nan_to_num(np.array(bw.values("chr2", 0, size))).reshape(-1, 1280).mean(axis=1)
    counts = {t: np.zeros(size // 1280) for t in rules.TRACKS}
    for r in rows:
        t = cells.get(r[3])
        for p in (int(r[1]), int(r[2]) - 1):
            if t is not None and p < size:
                counts[t][p // 1280] += 1
    own = np.corrcoef(np.log1p(counts["neuron"]), np.log1p(track))[0, 1]
    other = np.corrcoef(np.log1p(counts["oligodendrocyte"]), np.log1p(track))[0, 1]
    assert own > 0.6 and own > other + 0.1, (own, other)


def test_blacklist_bed_is_valid(demo):
    rows = _read_bed(demo.blacklist)
    assert len(rows) >= 4
    order = {c: i for i, c in enumerate(CHROMS)}
    assert rows == sorted(rows, key=lambda r: (order[r[0]], r[1]))
    for chrom, start, end, name in rows:
        assert 0 <= start < end <= demo.chrom_sizes[chrom]
        assert name in {"n_gap", "high_signal_artefact"}
    assert ("chr1", 0, 10_000, "n_gap") in rows


def test_manifest_and_rules(demo):
    manifest = json.loads(demo.manifest.read_text())
    assert manifest["tool_version"] == __version__
    assert manifest["seed"] == 0
    assert manifest["chrom_sizes"] == demo.chrom_sizes
    assert manifest["tracks"] == list(rules.TRACKS)
    for rel in (manifest["genome"], manifest["vcf"], *manifest["targets"].values()):
        assert (demo.out_dir / rel).is_file()
    text = demo.rules.read_text()
    for word in ("CTCF", "SPI1", "CEBPB", "FOS::JUN", "GATA1", "MA0139.1", *rules.TRACKS, "blacklist"):
        assert word in text


def test_motif_files_are_the_jaspar_matrices():
    expected = {"MA0139.1": ("CTCF", 19), "MA0080.4": ("SPI1", 14), "MA0466.2": ("CEBPB", 10),
                "MA0099.2": ("FOS::JUN", 7), "MA0035.3": ("Gata1", 11)}
    found = {}
    for path in sorted(MOTIF_DIR.glob("*.jaspar")):
        m = read_jaspar(path)
        found[m.matrix_id] = (m.name, m.width)
        assert path.name.startswith(m.matrix_id)
    assert found == expected
    ctcf = read_jaspar(MOTIF_DIR / "MA0139.1_CTCF.jaspar")
    assert ctcf.counts[0].tolist() == [87, 291, 76, 459]  # first position: A C G T counts


# ------------------------------------------------------------------------------ variants


@pytest.fixture(scope="module")
def records(demo):
    with pysam.VariantFile(str(demo.vcf)) as vcf:
        return [(r.chrom, r.pos, r.id, r.ref, r.alts, dict(r.info)) for r in vcf]


@pytest.fixture(scope="module")
def truth(demo):
    lines = demo.truth.read_text().splitlines()
    head = lines[0].split("\t")
    return [dict(zip(head, line.split("\t"))) for line in lines[1:]]


def _fasta_chrom(chrom: str) -> str:
    return "chr2" if chrom == "2" else chrom


def test_vcf_has_every_kind_of_record(demo, fasta, records):
    kinds = {}
    for chrom, pos, ident, ref, alts, info in records:
        kinds.setdefault(info["DEMO_CLASS"], []).append((chrom, pos, ref, alts, info))
    assert 200 <= len(kinds["causal"]) <= 400
    assert 200 <= len(kinds["neutral"]) <= 400
    assert all(info.get("CAUSAL") for *_, info in kinds["causal"])
    assert all(info.get("NEUTRAL") for *_, info in kinds["neutral"])
    indels = kinds["indel"]
    assert any(len(ref) > len(alts[0]) for _, _, ref, alts, _ in indels)  # deletion
    assert any(len(ref) < len(alts[0]) for _, _, ref, alts, _ in indels)  # insertion
    assert any("MOTIF" in info for *_, info in indels)  # inside an element
    assert all(len(alts) >= 2 for _, _, _, alts, _ in kinds["multiallelic"])
    for chrom, pos, ref, alts, _ in kinds["ref_mismatch"]:
        assert fasta.fetch(_fasta_chrom(chrom), pos - 1, pos - 1 + len(ref)).upper() != ref
    near = [(c, p) for c, p, *_ in kinds["near_end"]]
    assert any(p > demo.chrom_sizes[c] - 50 for c, p in near)
    assert [c for c, *_ in kinds["other_naming"]] == ["2"]
    # every other REF matches the genome (case-insensitively)
    for cls, recs in kinds.items():
        if cls == "ref_mismatch":
            continue
        for chrom, pos, ref, alts, _ in recs:
            assert fasta.fetch(_fasta_chrom(chrom), pos - 1, pos - 1 + len(ref)).upper() == ref, (cls, chrom, pos)


def test_vcf_is_indexed_and_declares_both_names(demo, records):
    assert demo.vcf_index.is_file()
    with pysam.VariantFile(str(demo.vcf)) as vcf:
        assert list(vcf.header.contigs) == CHROMS + ["2"]
        assert vcf.header.contigs["2"].length == demo.chrom_sizes["chr2"]
        assert len(list(vcf.fetch("2"))) == 1
        assert sum(len(list(vcf.fetch(c))) for c in CHROMS + ["2"]) == len(records)
    # sorted within each contig, contigs in header order
    order = {c: i for i, c in enumerate(CHROMS + ["2"])}
    keys = [(order[c], p) for c, p, *_ in records]
    assert keys == sorted(keys)


def test_truth_table_matches_the_vcf(records, truth):
    assert len(truth) == len(records)
    for row, (chrom, pos, ident, ref, alts, info) in zip(truth, records):
        assert (row["chrom"], int(row["pos"]), row["id"], row["ref"], row["alt"]) == (chrom, pos, ident, ref, ",".join(alts))
        assert row["class"] == info["DEMO_CLASS"]
    for row in truth:
        if row["class"] in ("causal", "other_naming"):
            effects = [float(row[f"effect_{t}"]) for t in row["tracks"].split(",")]
            assert row["motif"] != "." and all(e < -0.2 for e in effects)
        if row["class"] == "neutral":
            assert all(float(row[f"effect_{t}"]) == 0 for t in rules.TRACKS)


def test_causal_variants_break_their_motif_and_neutral_ones_are_far(demo, fasta, truth):
    motifs = {m.name: m for m in rules.load_motifs()}
    hits = _read_bed(demo.motif_hits)
    centres = {}
    for chrom, s, e, *_ in hits:
        centres.setdefault(chrom, []).append((s + e) / 2)
    for row in truth:
        chrom, pos = _fasta_chrom(row["chrom"]), int(row["pos"])
        if row["class"] == "causal":
            m = motifs[row["motif"]]
            lo = pos - 1 - m.width
            window = fasta.fetch(chrom, lo, pos + m.width)
            mutated = window[: pos - 1 - lo] + row["alt"] + window[pos - lo :]
            assert window_score(encode_sequence(window), m) >= m.threshold
            assert window_score(encode_sequence(mutated), m) < m.threshold
        elif row["class"] == "neutral":
            assert min(abs(c - pos) for c in centres[chrom]) > 1_000


def test_core_imports_no_torch_typer_or_rich():
    code = "import sys, epiformer_cli.demo; print(sorted(m for m in ('torch', 'typer', 'rich') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
