import numpy as np
import pytest

from epiformer_cli.errors import InputFileError
from epiformer_cli.io.bed import IntervalIndex, merge_intervals, read_bed
from epiformer_cli.io.targets import read_targets


def test_bed_skips_headers_resolves_aliases_and_clips(tmp_path):
    bed = tmp_path / "r.bed"
    bed.write_text("track name=x\nbrowser position chr1\n# comment\n1\t10\t20\tpeak\nchr2\t5\t500\n")
    assert read_bed(bed, {"chr1": 100, "chr2": 50}) == [("chr1", 10, 20), ("chr2", 5, 50)]


@pytest.mark.parametrize(
    "line,match",
    [("chr1\t10\n", "not a BED line"), ("chr1\tten\t20\n", "not a BED line"), ("chr1\t20\t10\n", "invalid interval"),
     ("chr1\t-5\t10\n", "invalid interval"), ("chr9\t1\t2\n", "not in the genome")],
)
def test_bad_bed_lines_name_file_and_line(tmp_path, line, match):
    bed = tmp_path / "bad.bed"
    bed.write_text("chr1\t0\t5\n" + line)
    with pytest.raises(InputFileError, match=match) as err:
        read_bed(bed, {"chr1": 100})
    assert f"{bed}:2" in str(err.value)


def test_a_column_header_without_hash_is_skipped_with_a_warning_only_on_the_first_line(tmp_path, caplog):
    bed = tmp_path / "frame.bed"
    bed.write_text("chrom\tstart\tend\tname\nchr1\t10\t20\tp\n")
    assert read_bed(bed, {"chr1": 100}) == [("chr1", 10, 20)]
    assert len([r for r in caplog.records if "column header" in r.getMessage()]) == 1
    later = tmp_path / "later.bed"
    later.write_text("chr1\t10\t20\nchrom\tstart\tend\n")  # inside the data it is a bad line
    with pytest.raises(InputFileError, match=f"{later}:2: not a BED line"):
        read_bed(later, {"chr1": 100})


def test_unknown_chromosomes_can_be_skipped(tmp_path):
    bed = tmp_path / "b.bed"
    bed.write_text("chrUn_x\t0\t5\nchr1\t1\t2\n")
    assert read_bed(bed, {"chr1": 100}, unknown="skip") == [("chr1", 1, 2)]


def test_interval_index_overlaps():
    index = IntervalIndex([("c", 10, 20), ("c", 30, 40), ("c", 15, 25)])
    queries = [(0, 10), (0, 11), (25, 30), (24, 26), (39, 50), (40, 50)]
    expected = [False, True, False, True, True, False]
    assert [index.overlaps("c", s, e) for s, e in queries] == expected
    starts, ends = np.array(queries).T
    assert index.overlaps_many("c", starts, ends).tolist() == expected
    assert not index.overlaps("other", 0, 100)
    assert merge_intervals([(0, 5), (5, 8), (10, 12)]) == [(0, 8), (10, 12)]
    assert merge_intervals([(0, 5), (7, 8)], gap=2) == [(0, 8)]


def test_targets_sheet_relative_paths_and_defaults(tmp_path):
    sheet = tmp_path / "sheets" / "targets.tsv"
    sheet.parent.mkdir()
    sheet.write_text("name\tpath\tscale\tclip\tstat\nneuron\t../bw/n.bw\t2\t64\tsum\nglia\t/abs/g.bw\t\t\t\n")
    a, b = read_targets(sheet)
    assert (a.name, a.path, a.scale, a.clip, a.stat) == ("neuron", (tmp_path / "bw" / "n.bw").resolve(), 2.0, 64.0, "sum")
    assert (b.path.as_posix(), b.scale, b.clip, b.stat) == ("/abs/g.bw", 1.0, None, "mean")


def test_targets_plain_list_and_basenji_columns(tmp_path):
    plain = tmp_path / "list.txt"
    plain.write_text("a.bw\nsub/b.bigWig\n")
    assert [t.name for t in read_targets(plain)] == ["a", "b"]
    basenji = tmp_path / "targets.txt"
    basenji.write_text("index\tidentifier\tfile\tclip\tscale\tsum_stat\tdescription\n0\tENCFF1\tx.bw\t32\t1\tsum\tATAC\n")
    (t,) = read_targets(basenji)
    assert (t.name, t.clip, t.stat) == ("ENCFF1", 32.0, "sum")


@pytest.mark.parametrize(
    "text,match",
    [("name\tfile_path\nx\ty.bw\n", "lacks the column"), ("name\tpath\nx\ta.bw\nx\tb.bw\n", "duplicate track"),
     ("name\tpath\tscale\nx\ta.bw\tbig\n", "numbers"), ("name\tpath\tstat\nx\ta.bw\tmax\n", "stat"), ("", "empty")],
)
def test_bad_targets_sheets(tmp_path, text, match):
    sheet = tmp_path / "t.tsv"
    sheet.write_text(text)
    with pytest.raises(InputFileError, match=match):
        read_targets(sheet)
