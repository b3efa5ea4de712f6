"""score-variants --motif-db: the strongest motif instance each allele overlaps, on a planted site
whose scores are summed by hand; its VCF fields through pysam; refusals; the run's identity."""

from __future__ import annotations

import math
from urllib.parse import unquote

import numpy as np
import pysam
import pytest
from typer.testing import CliRunner

from epiformer_cli.cli.app import app
from epiformer_cli.errors import EpiformerError
from epiformer_cli.motifs.database import Motif, write_meme
from epiformer_cli.variants.motifs import changed_bases
from epiformer_cli.variants.output import MOTIF_COLUMNS, TSV_COLUMNS, info_text
from tests.helpers import HEADER, other, read_tsv, score, score_files, write_fasta

runner = CliRunner()

SITE = "GATTACAG"  # planted at chr1:20000 (0-based); P(site) = 4^-8 < 1e-4 < P(7 of its bases)
AT = 20_000
#: log2-odds of a consensus base (0.7) and of any other (0.1), as memelite makes them (eps 1e-4)
HIT, MISS = math.log2(0.7 + 1e-4) + 2, math.log2(0.1 + 1e-4) + 2


def site_pwm() -> np.ndarray:
    pwm = np.full((4, len(SITE)), 0.1)
    for j, base in enumerate(SITE):
        pwm["ACGT".index(base), j] = 0.7
    return pwm


def hand_score(window: str) -> float:
    """The log-odds sum of an 8 bp window against the site's matrix, base by base."""
    return sum(HIT if base == SITE[j] else MISS for j, base in enumerate(window))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """score_files' genome with the site planted, its conservation and model, a one-motif MEME
    file, a motifs output folder, and a VCF: an SNV in the site, an SNV far from it, a deletion in
    it and a two-ALT record on it."""
    folder = tmp_path_factory.mktemp("motifs")
    made = score_files(folder)
    seqs = dict(made["seqs"])
    s = seqs["chr1"][:AT] + SITE + seqs["chr1"][AT + len(SITE):]
    seqs["chr1"] = s
    made["fasta"] = write_fasta(folder / "planted.fa", seqs)
    made["seqs"] = seqs
    write_meme(folder / "one.meme", [Motif("TESTM", "TF1", site_pwm())])
    (folder / "run").mkdir()
    write_meme(folder / "run" / "patterns.meme", [Motif("microglia_pos_0", "SPI1;x=1,2", site_pwm())])
    made["meme"], made["patterns"] = folder / "one.meme", folder / "run"
    rows = [(AT + 4, "planted", s[AT + 3], "C"),  # the site's 4th base (T>C): offset -3
            (5001, "far", s[5000], other(s[5000])),
            (AT + 2, "del", s[AT + 1:AT + 3], s[AT + 1]),  # AT>A: the site's first T deleted (offset -2)
            (AT + 1, "two", s[AT], "C,T")]  # the site's G, two ways (offset 0)
    made["vcf"] = folder / "v.vcf"
    made["vcf"].write_text(HEADER + "".join(f"chr1\t{p}\t{i}\t{r}\t{a}\t.\t.\t.\n" for p, i, r, a in rows))
    return made


def run(world, out, **kw):
    return score(vcf=world["vcf"], fasta=world["fasta"], cons=world["cons"], model=world["model"], out=out,
                 device="cpu", **kw)


def test_planted_site_gets_the_hand_summed_scores_and_a_far_snv_none(world, tmp_path):
    run(world, tmp_path / "m.tsv", motif_db=str(world["meme"]))
    rows = read_tsv(tmp_path / "m.tsv")
    assert list(rows[0])[-4:] == list(MOTIF_COLUMNS) and len(rows) == 3 * 5
    got = {}
    for row in rows:
        got.setdefault(row["id"] + ">" + row["alt"], set()).add(tuple(row[c] for c in MOTIF_COLUMNS))
    assert all(len(v) == 1 for v in got.values())  # every track's row carries the allele's instance
    got = {k: v.pop() for k, v in got.items()}
    s = world["seqs"]["chr1"]
    assert got["planted>C"] == ("TESTM (TF1)", "+", f"{8 * HIT:.6g}", f"{7 * HIT + MISS:.6g}")
    assert got["far>" + other(s[5000])] == (".", ".", "NA", "NA")
    # the deletion's instance keeps its offset (-2): the alternative reads on past the deleted T
    deleted = s[AT:AT + 2] + s[AT + 3:AT + 9]
    assert deleted == "GATACAG" + s[AT + 8]
    assert got["del>A"] == ("TESTM (TF1)", "+", f"{8 * HIT:.6g}", f"{hand_score(deleted):.6g}")
    assert got["two>C"] == got["two>T"] == ("TESTM (TF1)", "+", f"{8 * HIT:.6g}", f"{7 * HIT + MISS:.6g}")


def test_without_motif_db_the_output_is_unchanged(world, tmp_path):
    run(world, tmp_path / "plain.tsv")
    run(world, tmp_path / "m.tsv", motif_db=str(world["meme"]))
    plain = (tmp_path / "plain.tsv").read_text().splitlines()
    with_motifs = (tmp_path / "m.tsv").read_text().splitlines()
    assert plain[0].split("\t") == list(TSV_COLUMNS)
    assert plain == ["\t".join(line.split("\t")[:-4]) for line in with_motifs]
    run(world, tmp_path / "plain.vcf")
    assert "EPI_MOTIF" not in (tmp_path / "plain.vcf").read_text()


def test_vcf_fields_round_trip_through_pysam_with_a_motifs_folder(world, tmp_path):
    run(world, tmp_path / "m.vcf", motif_db=str(world["patterns"]))
    with pysam.VariantFile(str(tmp_path / "m.vcf")) as vf:
        info = vf.header.info
        for key, kind in (("EPI_MOTIF", "String"), ("EPI_MOTIF_STRAND", "String"), ("EPI_MOTIF_REF", "Float"),
                          ("EPI_MOTIF_ALT", "Float")):
            assert info[key].number == "A" and info[key].type == kind
        records = {r.id: r for r in vf}
    label = "microglia_pos_0 (SPI1;x=1,2)"
    planted = records["planted"].info
    assert planted["EPI_MOTIF"] == ("microglia_pos_0%20(SPI1%3Bx%3D1%2C2)",)
    assert unquote(planted["EPI_MOTIF"][0]) == label and planted["EPI_MOTIF_STRAND"] == ("+",)
    # as written (6 digits), read back as the float32 htslib keeps
    assert planted["EPI_MOTIF_REF"][0] == np.float32(f"{8 * HIT:.6g}")
    assert planted["EPI_MOTIF_ALT"][0] == np.float32(f"{7 * HIT + MISS:.6g}")
    assert records["far"].info["EPI_MOTIF"] == (".",) and records["far"].info["EPI_MOTIF_REF"] == (None,)
    two = records["two"].info
    assert [unquote(v) for v in two["EPI_MOTIF"]] == [label, label] and len(two["EPI_MOTIF_ALT"]) == 2
    assert "epiformer_motifs" in (tmp_path / "m.vcf").read_text()


def test_info_text_percent_encodes_what_vcf_gives_a_meaning():
    assert info_text("a;b=c,d e%f\tg") == "a%3Bb%3Dc%2Cd%20e%25f%09g"
    assert unquote(info_text("FOS::JUN (x,y)")) == "FOS::JUN (x,y)" and info_text("FOS::JUN") == "FOS::JUN"
    assert info_text("") == "."


def test_changed_bases_drop_the_shared_suffix_then_prefix():
    assert changed_bases(10, "A", "G") == (10, "A", "G")
    assert changed_bases(10, "AT", "A") == (11, "T", "")
    assert changed_bases(10, "A", "ATT") == (11, "", "TT")
    assert changed_bases(10, "CTT", "CT") == (11, "T", "")  # the leftmost T, as bcftools norm would
    assert changed_bases(10, "ACG", "ATG") == (11, "C", "T")
    assert changed_bases(10, "AC", "AC") == (10, "", "")  # nothing changes: no instance


# ---- the command line --------------------------------------------------------------------------------
def test_help_names_the_option():
    result = runner.invoke(app, ["score-variants", "--help"], terminal_width=200)
    assert result.exit_code == 0 and "--motif-db" in result.output
    assert "strongest motif instance each variant" in " ".join(result.output.split())


def _refused(world, tmp_path, motif_db):
    result = runner.invoke(app, ["score-variants", str(world["vcf"]), "--fasta", str(world["fasta"]), "--cons",
                                 str(world["cons"]), "--model", str(world["model"]), "--device", "cpu",
                                 "--null-size", "0", "--out", str(tmp_path / "o.tsv"), "--motif-db", str(motif_db)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert not (tmp_path / "o.tsv").exists() and not (tmp_path / "o.tsv.parts").exists()
    return lines[0]


def test_refusals_are_one_line_each_before_any_work(world, tmp_path):
    assert _refused(world, tmp_path, tmp_path / "nope.meme") == (
        f"epiformer: error: {tmp_path / 'nope.meme'}: motif file not found: give a MEME file or the --out folder of "
        "epiformer motifs")
    (tmp_path / "empty").mkdir()
    assert _refused(world, tmp_path, tmp_path / "empty") == (
        f"epiformer: error: {tmp_path / 'empty'} is not a motifs output folder (no patterns.meme): give a MEME file "
        "or the --out folder of epiformer motifs")
    bad = tmp_path / "bad.meme"
    bad.write_text(world["meme"].read_text().replace("0.7 0.1 0.1 0.1", "0.7 0.1 0.1", 1))
    line = _refused(world, tmp_path, bad)
    assert line.startswith(f"epiformer: error: {bad} line ") and ": expected 4 probabilities, found 3 (" in line


def test_the_motif_file_is_part_of_the_runs_identity(world, tmp_path):
    meme = tmp_path / "db.meme"
    meme.write_text(world["meme"].read_text())
    out = tmp_path / "s.tsv"
    first = run(world, out, motif_db=str(meme), shard="1/2", chunk_size=1, force=False)
    assert not first.assembled and (tmp_path / "s.tsv.parts").is_dir()
    # the same content under another name is the same input: the run resumes
    moved = tmp_path / "moved.meme"
    moved.write_text(meme.read_text())
    # another content is another run: refused, naming the option
    write_meme(meme, [Motif("OTHER", "", site_pwm()[::-1])])
    with pytest.raises(EpiformerError) as caught:
        run(world, out, motif_db=str(meme), shard="2/2", chunk_size=1, force=False)
    assert "--motif-db" in str(caught.value)
    with pytest.raises(EpiformerError) as caught:
        run(world, out, shard="2/2", chunk_size=1, force=False)  # nor without motifs
    assert "--motif-db" in str(caught.value)
    done = run(world, out, motif_db=str(moved), shard="2/2", chunk_size=1, force=False)
    assert done.assembled
    run(world, tmp_path / "whole.tsv", motif_db=str(moved))
    columns = ("id", "alt", "track", "status") + MOTIF_COLUMNS  # (the model's float rounding depends on the chunks)
    assert [[r[c] for c in columns] for r in read_tsv(out)] == [[r[c] for c in columns]
                                                                for r in read_tsv(tmp_path / "whole.tsv")]
