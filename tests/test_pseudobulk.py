"""`epiformer pseudobulk`: hand-made fragments files whose bigWigs are checked base by base."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import numpy as np
import pyBigWig
import pytest
from typer.testing import CliRunner

from epiformer_cli.cli.app import app
from epiformer_cli.errors import ChromosomeMismatchError, InputFileError, UsageError
from epiformer_cli.jobs.pseudobulk import pseudobulk
from epiformer_cli.options import PseudobulkOptions
from tests.helpers import bgzip_text, write_fasta

SIZES = {"chr1": 1000, "chr2": 500}
ANY = dict(min_cells=1, min_fragments=1)

#: (chrom, start, end, barcode, count)
FRAGMENTS = [
    ("chr1", 10, 20, "AAA-1", 2),
    ("chr1", 15, 30, "BBB-1", 1),
    ("chr1", 15, 30, "CCC-1", 1),  # not a cell
    ("chr1", 990, 1000, "BBB-1", 1),  # up to the chromosome's end
    ("chr2", 100, 150, "AAA-1", 1),
    ("chrUn_x", 5, 60, "AAA-1", 1),  # not in the FASTA
]


def fragments_text(rows, header=True) -> str:
    head = "# id=sample\n# reference_path=/refdata\n" if header else ""
    return head + "".join(f"{c}\t{s}\t{e}\t{b}\t{n}\n" for c, s, e, b, n in rows)


@pytest.fixture
def files(tmp_path):
    fasta = write_fasta(tmp_path / "genome.fa", {c: "ACGT" * (n // 4) for c, n in SIZES.items()})
    frags = tmp_path / "sample1.tsv"
    frags.write_text(fragments_text(FRAGMENTS))
    table = tmp_path / "cells.tsv"
    table.write_text("barcode\tcell_type\nAAA-1\tT1\nBBB-1\tT2\n")
    return fasta, frags, table


def values(path: Path, chrom: str) -> np.ndarray:
    """Every base of ``chrom`` (0 where the bigWig has no data)."""
    with pyBigWig.open(str(path)) as bw:
        return np.nan_to_num(np.array(bw.values(chrom, 0, SIZES[chrom]), dtype=np.float64))


def expected(points, chrom, value):
    out = np.zeros(SIZES[chrom])
    for p in points:
        out[p] += value
    return out


def test_insertions_per_million_fragments_base_by_base(files, tmp_path):
    fasta, frags, table = files
    summary = pseudobulk([frags], table, fasta, tmp_path / "out", options=PseudobulkOptions(**ANY))
    t1, t2 = summary.bigwig("T1"), summary.bigwig("T2")
    # T1: 2 fragments (chr1 10-20, chr2 100-150): insertions at start and end - 1, each 1e6 / 2
    np.testing.assert_array_equal(values(t1, "chr1"), expected([10, 19], "chr1", 5e5))
    np.testing.assert_array_equal(values(t1, "chr2"), expected([100, 149], "chr2", 5e5))
    # T2: 2 fragments (chr1 15-30, 990-1000), the last insertion on the chromosome's last base
    np.testing.assert_array_equal(values(t2, "chr1"), expected([15, 29, 990, 999], "chr1", 5e5))
    assert not values(t2, "chr2").any()
    with pyBigWig.open(str(t1)) as bw:
        assert bw.chroms() == SIZES  # the FASTA's names and lengths, the unknown chromosome left out


def test_coverage_and_raw_counts(files, tmp_path):
    fasta, frags, table = files
    summary = pseudobulk([frags], table, fasta, tmp_path / "out",
                         options=PseudobulkOptions(signal="coverage", normalize="none", **ANY))
    want = np.zeros(1000)
    want[15:30] += 1
    want[990:1000] += 1
    np.testing.assert_array_equal(values(summary.bigwig("T2"), "chr1"), want)
    want = np.zeros(500)
    want[100:150] = 1
    np.testing.assert_array_equal(values(summary.bigwig("T1"), "chr2"), want)
    # raw counts: one scale for both tracks (their depths stay as counted), from the mean of their
    # totals: T1 covers 10 + 50 bases, T2 15 + 10; 1,500 bp
    from epiformer_cli.io.targets import read_targets

    assert [t.scale for t in read_targets(summary.out / "targets.tsv")] == [pytest.approx(1500 / 42.5)] * 2


def test_duplicates_once_or_as_counted(files, tmp_path):
    fasta, frags, table = files
    once = pseudobulk([frags], table, fasta, tmp_path / "a", options=PseudobulkOptions(normalize="none", **ANY))
    assert values(once.bigwig("T1"), "chr1")[10] == 1
    counted = pseudobulk([frags], table, fasta, tmp_path / "b",
                         options=PseudobulkOptions(count_duplicates=True, **ANY))
    # the fragment seen twice weighs 2; CPM over 3 read pairs
    assert values(counted.bigwig("T1"), "chr1")[10] == pytest.approx(2 * 1e6 / 3, rel=1e-6)
    assert values(counted.bigwig("T1"), "chr2")[100] == pytest.approx(1e6 / 3, rel=1e-6)


def test_qc_table_and_targets_sheet(files, tmp_path):
    from epiformer_cli.io.targets import read_targets

    fasta, frags, table = files
    out = tmp_path / "out"
    pseudobulk([frags], table, fasta, out, options=PseudobulkOptions(**ANY))
    rows = [line.split("\t") for line in (out / "qc.tsv").read_text().splitlines()]
    head, t1 = rows[0], dict(zip(rows[0], rows[1]))
    assert head[:4] == ["cell_type", "cells", "fragments", "read_pairs"]
    assert (t1["cell_type"], t1["cells"], t1["fragments"], t1["read_pairs"]) == ("T1", "1", "2", "3")
    assert float(t1["duplicate_fraction"]) == pytest.approx(1 / 3, rel=1e-3)
    # 12 bins of 128 bp in the genome: the top 1% is 1 bin, holding 2 of T1's 4 insertions
    assert float(t1["top1pct_fraction"]) == pytest.approx(0.5)
    sheet = read_targets(out / "targets.tsv")
    assert [t.name for t in sheet] == ["T1", "T2"]
    assert all(t.path.exists() and t.stat == "mean" and t.clip is None for t in sheet)
    # the scale puts each track's genome-wide mean at 1 per base: 4 insertions at 1e6 / 2 each, 1,500 bp
    assert [t.scale for t in sheet] == [pytest.approx(1500 / 2e6)] * 2
    assert (out / "fragment_lengths.png").stat().st_size > 0
    assert (out / "fragments_per_cell.png").stat().st_size > 0
    assert not (out / "pseudobulk.parts").exists()


def test_repeated_barcodes_of_two_samples_are_kept_apart(tmp_path):
    fasta = write_fasta(tmp_path / "genome.fa", {c: "ACGT" * (n // 4) for c, n in SIZES.items()})
    a = tmp_path / "a.tsv"
    a.write_text(fragments_text([("chr1", 10, 20, "AAA-1", 1)]))
    b = bgzip_text(fragments_text([("chr1", 40, 50, "AAA-1", 1), ("chr1", 60, 70, "AAA-1", 1)]), tmp_path / "b.tsv.gz")
    table = tmp_path / "cells.tsv"
    table.write_text("barcode\tcell_type\tsample\nAAA-1\tMicroglia\tdonor1\nAAA-1\tNeuron\tdonor2\n")
    summary = pseudobulk([f"donor1={a}", f"donor2={b}"], table, fasta, tmp_path / "out",
                         options=PseudobulkOptions(normalize="none", **ANY))
    np.testing.assert_array_equal(np.flatnonzero(values(summary.bigwig("Microglia"), "chr1")), [10, 19])
    np.testing.assert_array_equal(np.flatnonzero(values(summary.bigwig("Neuron"), "chr1")), [40, 49, 60, 69])
    # without a sample column, one barcode in two files is two cells of its type
    table.write_text("barcode\tcell_type\nAAA-1\tMicroglia\n")
    both = pseudobulk([a, b], table, fasta, tmp_path / "out2", options=PseudobulkOptions(normalize="none", **ANY))
    np.testing.assert_array_equal(np.flatnonzero(values(both.bigwig("Microglia"), "chr1")), [10, 19, 40, 49, 60, 69])
    assert both.qc[0].cells == 2
    with pytest.raises(UsageError, match=r"sample 'a' is not in the sample column .*donor1=.*a\.tsv"):
        table.write_text("barcode\tcell_type\tsample\nAAA-1\tMicroglia\tdonor1\n")
        pseudobulk([a], table, fasta, tmp_path / "out3", options=PseudobulkOptions(**ANY))


def test_file_order_does_not_matter(files, tmp_path, caplog):
    """A shuffled file (and one gzipped) gives the same bigWigs as the sorted one, and the log says
    it is not sorted."""
    fasta, frags, table = files
    rows = FRAGMENTS * 3
    sorted_file = tmp_path / "sorted.tsv"
    sorted_file.write_text(fragments_text(sorted(rows)))
    shuffled = list(rows)
    random.Random(1).shuffle(shuffled)
    gz = tmp_path / "shuffled.tsv.gz"
    with gzip.open(gz, "wt") as handle:
        handle.write(fragments_text(shuffled))
    a = pseudobulk([sorted_file], table, fasta, tmp_path / "a", options=PseudobulkOptions(**ANY))
    with caplog.at_level("WARNING", logger="epiformer_cli.jobs.pseudobulk"):
        b = pseudobulk([gz], table, fasta, tmp_path / "b", options=PseudobulkOptions(**ANY))
    assert any("shuffled.tsv.gz is not sorted by position (line" in r.getMessage() for r in caplog.records)
    for t in ("T1", "T2"):
        for chrom in SIZES:
            np.testing.assert_array_equal(values(a.bigwig(t), chrom), values(b.bigwig(t), chrom))


def test_resumes_at_the_first_unfinished_chromosome(files, tmp_path, monkeypatch):
    import epiformer_cli.pseudobulk.signal as signal

    fasta, frags, table = files
    out = tmp_path / "out"
    real = signal.chromosome_signal
    calls = []

    def failing(paths, length, *args, **kw):
        calls.append(length)
        if length == SIZES["chr2"]:
            raise KeyboardInterrupt
        return real(paths, length, *args, **kw)

    monkeypatch.setattr(signal, "chromosome_signal", failing)
    with pytest.raises(KeyboardInterrupt):
        pseudobulk([frags], table, fasta, out, options=PseudobulkOptions(**ANY))
    assert (out / "pseudobulk.parts").is_dir() and not (out / "pseudobulk.json").exists()
    calls.clear()
    monkeypatch.setattr(signal, "chromosome_signal", lambda *a, **k: (calls.append(a[1]), real(*a, **k))[1])
    summary = pseudobulk([frags], table, fasta, out, options=PseudobulkOptions(**ANY))
    assert calls == [SIZES["chr2"]]  # chr1 and the file's pass were kept
    assert summary.resumed == 1
    np.testing.assert_array_equal(values(summary.bigwig("T1"), "chr2"), expected([100, 149], "chr2", 5e5))


# ---- bad input: one line each --------------------------------------------------------------------------
def test_another_assembly_is_refused(files, tmp_path):
    fasta, _, table = files
    frags = tmp_path / "hg19.tsv"
    frags.write_text(fragments_text([("NC_000001", 10, 20, "AAA-1", 1)]))
    with pytest.raises(ChromosomeMismatchError, match="no chromosome in common .*NC_000001.*chr1"):
        pseudobulk([frags], table, fasta, tmp_path / "out", options=PseudobulkOptions(**ANY))


def test_a_fragment_past_the_chromosome_end_names_its_line(files, tmp_path):
    fasta, _, table = files
    frags = tmp_path / "f.tsv"
    frags.write_text(fragments_text([("chr1", 10, 20, "AAA-1", 1), ("chr2", 480, 520, "BBB-1", 1)]))
    with pytest.raises(InputFileError, match=r"f\.tsv:4: fragment chr2:480-520 runs past the end of chr2 \(500 bp"):
        pseudobulk([frags], table, fasta, tmp_path / "out", options=PseudobulkOptions(**ANY))


def test_no_barcode_in_common_is_refused(files, tmp_path):
    fasta, frags, _ = files
    table = tmp_path / "other.tsv"
    table.write_text("barcode\tcell_type\nGGG-1\tT1\n")
    with pytest.raises(InputFileError, match="none of its 6 fragments is of a barcode of"):
        pseudobulk([frags], table, fasta, tmp_path / "out", options=PseudobulkOptions(**ANY))


def test_cell_type_below_min_cells_is_named(files, tmp_path):
    fasta, frags, table = files
    with pytest.raises(UsageError, match=r"too small a pseudo-bulk to train on: T1 \(1 cells\), T2 \(1 cells\) "
                                         r"below --min-cells 2"):
        pseudobulk([frags], table, fasta, tmp_path / "out", options=PseudobulkOptions(min_cells=2, min_fragments=1))
    assert not (tmp_path / "out").exists()  # refused before reading
    with pytest.raises(UsageError, match=r"T1 \(2 fragments\), T2 \(2 fragments\) below --min-fragments 3"):
        pseudobulk([frags], table, fasta, tmp_path / "out", options=PseudobulkOptions(min_cells=1, min_fragments=3))


def test_an_empty_chromosome_is_refused(tmp_path):
    fasta = write_fasta(tmp_path / "genome.fa", {"chr1": "ACGT" * 250, "chr2": "ACGT" * 125, "chr3": "ACGT" * 25})
    frags = tmp_path / "f.tsv"
    frags.write_text(fragments_text([("chr1", 10, 20, "AAA-1", 1)]))
    table = tmp_path / "cells.tsv"
    table.write_text("AAA-1\tT1\n")  # no header
    with pytest.raises(UsageError, match="--chroms chr3: no fragment of a cell lies on it"):
        pseudobulk([frags], table, fasta, tmp_path / "out", options=PseudobulkOptions(chroms=("chr1", "chr3"), **ANY))


def test_a_truncated_gzip_is_refused(files, tmp_path):
    fasta, _, table = files
    rows = [("chr1", i, i + 50, "AAA-1", 1) for i in range(0, 900, 3)] * 40
    whole = tmp_path / "whole.tsv.gz"
    with gzip.open(whole, "wt") as handle:
        handle.write(fragments_text(rows))
    cut = tmp_path / "cut.tsv.gz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(InputFileError, match=r"cut\.tsv\.gz: the fragments file's compressed data is damaged or cut short"):
        pseudobulk([cut], table, fasta, tmp_path / "out", options=PseudobulkOptions(**ANY))


def test_not_a_fragments_file(files, tmp_path):
    fasta, _, table = files
    bed = tmp_path / "peaks.bed"
    bed.write_text("chr1\t10\t20\n")
    with pytest.raises(InputFileError, match=r"peaks\.bed:1: a fragment line needs chrom, start, end and barcode"):
        pseudobulk([bed], table, fasta, tmp_path / "out", options=PseudobulkOptions(**ANY))


def test_cli_exit_codes_and_one_line(files, tmp_path):
    fasta, frags, table = files
    runner = CliRunner()
    ok = runner.invoke(app, ["pseudobulk", "--fragments", str(frags), "--cell-types", str(table), "--fasta", str(fasta),
                             "--out", str(tmp_path / "out"), "--min-cells", "1", "--min-fragments", "1"])
    assert ok.exit_code == 0, ok.output
    again = runner.invoke(app, ["pseudobulk", "--fragments", str(frags), "--cell-types", str(table), "--fasta",
                                str(fasta), "--out", str(tmp_path / "out"), "--min-cells", "1", "--min-fragments", "1"])
    assert again.exit_code == 2
    assert "already holds pseudobulk results" in again.output and "--force" in again.output
    small = runner.invoke(app, ["pseudobulk", "--fragments", str(frags), "--cell-types", str(table), "--fasta",
                                str(fasta), "--out", str(tmp_path / "o2")])
    assert small.exit_code == 2 and len(small.output.strip().splitlines()) == 1
    assert "below --min-cells 20" in small.output
    over = runner.invoke(app, ["pseudobulk", "--fragments", str(frags), "--cell-types", str(table), "--fasta",
                               str(fasta), "--out", str(table), "--force"])
    assert over.exit_code == 2 and "--out" in over.output


def test_help():
    result = CliRunner().invoke(app, ["pseudobulk", "--help"])
    assert result.exit_code == 0 and "Tn5" in result.output


# ---- the pieces ----------------------------------------------------------------------------------------
def test_runs_of_equal_nonzero_value():
    from epiformer_cli.pseudobulk.signal import runs

    starts, ends, vals = runs(np.array([0, 2, 2, 0, 0, 1, 3, 3, 3], dtype=np.int32))
    assert starts.tolist() == [1, 5, 6] and ends.tolist() == [3, 6, 9] and vals.tolist() == [2, 1, 3]
    assert [len(x) for x in runs(np.zeros(5, np.int32))] == [0, 0, 0]


def test_top_bins_fraction_counts_empty_bins_and_splits_ties():
    from epiformer_cli.pseudobulk.signal import top_bins_fraction

    # 200 bins: the top 1% is 2 bins; bins hold 10, 5, 5 and 1 insertions (the rest none)
    assert top_bins_fraction([np.array([10, 5, 1])], [np.array([1, 2, 1])], 200) == pytest.approx(15 / 21)
    # 300 bins: 3 bins; two chromosomes' histograms add up
    assert top_bins_fraction([np.array([4]), np.array([4, 2])], [np.array([1]), np.array([1, 5])], 300) == \
        pytest.approx(10 / 18)
    assert np.isnan(top_bins_fraction([], [], 100))


def test_type_groups_fit_the_budget():
    from epiformer_cli.pseudobulk.signal import type_groups

    assert type_groups(5, 100, budget=6 * 101 * 2) == [range(0, 2), range(2, 4), range(4, 5)]
    assert type_groups(3, 10**9, budget=1) == [range(0, 1), range(1, 2), range(2, 3)]  # one at least


def test_groups_of_cell_types_give_the_same_signal(files, tmp_path, monkeypatch):
    """Summing the cell types one at a time (a small memory budget) changes nothing."""
    import epiformer_cli.pseudobulk.signal as signal

    fasta, frags, table = files
    whole = pseudobulk([frags], table, fasta, tmp_path / "a", options=PseudobulkOptions(signal="coverage", **ANY))
    monkeypatch.setattr(signal, "MEMORY_BUDGET", 1)
    monkeypatch.setattr(signal, "CHUNK", 2)
    split = pseudobulk([frags], table, fasta, tmp_path / "b", options=PseudobulkOptions(signal="coverage", **ANY))
    for t in ("T1", "T2"):
        for chrom in SIZES:
            np.testing.assert_array_equal(values(whole.bigwig(t), chrom), values(split.bigwig(t), chrom))


@pytest.mark.parametrize("text, types, samples", [
    ("barcode\tcell_type\nA-1\tMG\nB-1\tOL\n", ["MG", "OL"], False),
    ("A-1\tMG\nB-1\tOL\n", ["MG", "OL"], False),  # no header
    ("cell_id,sample,celltype\nA-1,s1,MG\nA-1,s2,OL\n", ["MG", "OL"], True),  # CSV, sample column
    ('"barcode"\t"cluster"\n"A-1"\t"MG"\n', ["MG"], False),  # quoted, R style
])
def test_cell_tables_as_clusterings_export_them(tmp_path, text, types, samples):
    from epiformer_cli.pseudobulk.cells import read_cell_table

    path = tmp_path / "cells.tsv"
    path.write_text(text)
    table = read_cell_table(path)
    assert table.types == types and table.has_samples == samples


@pytest.mark.parametrize("text, says", [
    ("barcode\tcell_type\nA-1\tMG\nA-1\tOL\n", r"cells\.tsv:3: barcode A-1 is given two cell types \(MG and OL\)"),
    ("barcode\tsample\nA-1\ts1\n", "the header names no cell_type column"),
    ("barcode\tcell_type\nA-1\n", r"cells\.tsv:2: every row needs a barcode, a cell type"),
    ("barcode\tcell_type\nA-1\tM,G\n", "contains a comma"),
    ("barcode\tcell_type\n", "lists no cells"),
])
def test_bad_cell_tables_name_the_line(tmp_path, text, says):
    from epiformer_cli.pseudobulk.cells import read_cell_table

    path = tmp_path / "cells.tsv"
    path.write_text(text)
    with pytest.raises(InputFileError, match=says):
        read_cell_table(path)


def test_file_samples():
    from epiformer_cli.pseudobulk.cells import file_sample

    assert file_sample("donor1=/data/x/fragments.tsv.gz") == ("donor1", Path("/data/x/fragments.tsv.gz"))
    assert file_sample("/data/pbmc_3k.fragments.tsv.gz")[0] == "pbmc_3k.fragments"
    assert file_sample("s2.bed")[0] == "s2"


def test_a_header_line_of_column_names_and_four_columns(files, tmp_path):
    """A file with a line of column names and no count column (count 1) reads as the 5-column one."""
    fasta, _, table = files
    frags = tmp_path / "four.bed"
    frags.write_text("chrom\tstart\tend\tbarcode\n" + "".join(f"{c}\t{s}\t{e}\t{b}\n" for c, s, e, b, _ in FRAGMENTS))
    summary = pseudobulk([frags], table, fasta, tmp_path / "out",
                         options=PseudobulkOptions(count_duplicates=True, normalize="none", **ANY))
    assert values(summary.bigwig("T1"), "chr1")[10] == 1
    assert summary.qc[0].read_pairs == summary.qc[0].fragments == 2


def test_a_cell_type_named_like_markup_gets_a_plain_file_name(files, tmp_path):
    fasta, frags, _ = files
    table = tmp_path / "cells.tsv"
    table.write_text("barcode\tcell_type\nAAA-1\t<script>alert(1)</script>\nBBB-1\tCD4+ T/NK\n")
    out = tmp_path / "out"
    pseudobulk([frags], table, fasta, out, options=PseudobulkOptions(**ANY))
    assert sorted(p.name for p in out.glob("*.bw")) == ["CD4+_T_NK.bw", "_script_alert_1___script_.bw"]
    from epiformer_cli.io.targets import read_targets

    assert [t.name for t in read_targets(out / "targets.tsv")] == ["<script>alert(1)</script>", "CD4+ T/NK"]
