"""Allele statuses of score-variants: an ALT with N is ``n_allele`` (not scored), REF with N keeps
the ``n_base`` flag, symbolic ALTs keep their status and spelling, other alleles are unchanged."""

import logging

import numpy as np
import pysam
import pytest
from typer.testing import CliRunner

from epiformer_cli.cli.app import app
from epiformer_cli.io.vcf import Allele, classify
from epiformer_cli.model.modelfile import save_model
from epiformer_cli.variants.effects import EFFECTS
from epiformer_cli.variants.output import vcf_info_definitions
from epiformer_cli.variants.scoring import FLAGS, STATUSES
from tests.helpers import other, read_tsv, run_job, sensitive_model, write_bigwig, write_fasta

GAP = (15_000, 15_010)  # an N gap of the FASTA (0-based, half-open), in a window off the chromosome ends
HEADER = ("##fileformat=VCFv4.2\n##contig=<ID=chr1,length=40000>\n##contig=<ID=chr2,length=20000>\n"
          "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
TRACKS = ["neuron", "glia", "astro"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("alleles")
    rng = np.random.default_rng(5)
    chr1 = "".join(rng.choice(list("ACGT"), 40_000))
    chr1 = chr1[:GAP[0]] + "N" * (GAP[1] - GAP[0]) + chr1[GAP[1]:]
    seqs = {"chr1": chr1, "chr2": "".join(rng.choice(list("ACGT"), 20_000))}
    fasta = write_fasta(folder / "g.fa", seqs)
    cons = write_bigwig(folder / "c.bw", {k: len(v) for k, v in seqs.items()},
                        {k: [(i, i + 50, float(rng.random())) for i in range(0, len(v), 50)] for k, v in seqs.items()})
    model = sensitive_model(seed=4)
    path = save_model(folder / "m.pt", model, model.config, TRACKS)
    return {"fasta": fasta, "cons": cons, "model": path, "seqs": seqs, "folder": folder}


def write_vcf(path, rows):
    """rows: (chrom, POS, ID, REF, ALT)."""
    path.write_text(HEADER + "".join(f"{c}\t{p}\t{i}\t{r}\t{a}\t.\t.\t.\n" for c, p, i, r, a in rows))
    return path


def plain_rows(seqs):
    """Alleles without N: an SNV, a deletion, an insertion, a lower-case SNV."""
    s = seqs["chr1"]
    return [("chr1", 20_001, "snv", s[20_000], other(s[20_000])),
            ("chr1", 25_001, "del", s[25_000:25_003], s[25_000]),
            ("chr1", 26_001, "ins", s[26_000], s[26_000] + "GAT"),
            ("chr1", 27_001, "lower", s[27_000].lower(), other(s[27_000]).lower())]


def n_rows(seqs):
    s = seqs["chr1"]
    return [("chr1", 21_001, "alt_n", s[21_000], "N"),
            ("chr1", 22_001, "alt_acn", s[22_000], "ACN"),
            ("chr1", 23_001, "alt_n_lower", s[23_000], "n")]


def by_id(rows):
    out = {}
    for row in rows:
        out.setdefault(row["id"], []).append(row)
    return out


def test_alt_with_n_gets_n_allele_with_na_scores_and_is_counted(files, tmp_path, caplog):
    seqs = files["seqs"]
    vcf = write_vcf(tmp_path / "v.vcf", plain_rows(seqs) + n_rows(seqs))
    with caplog.at_level(logging.WARNING, logger="epiformer_cli.jobs.score_variants"):
        summary, rows = run_job(files, vcf, out=tmp_path / "o.tsv")
    ids = by_id(rows)
    for name in ("alt_n", "alt_acn", "alt_n_lower"):
        assert [r["track"] for r in ids[name]] == TRACKS
        for row in ids[name]:
            assert row["status"] == "n_allele" and row["alt"] in ("N", "ACN")
            assert [row[e] for e in EFFECTS] == ["NA"] * len(EFFECTS)
    assert ids["alt_n"][0]["flags"] == ids["alt_acn"][0]["flags"] == "."
    assert ids["alt_n_lower"][0]["flags"] == "lowercase"  # "n" was written lower-case; no n_base (REF has none)
    assert summary.statuses == {"ok": 4, "n_allele": 3}
    assert summary.flags == {"lowercase": 2}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["7 alleles: ok 4, n_allele 3; flags: lowercase 2 (3 not scored: see the status column; "
                        "--strict makes them an error)"]


def test_alleles_without_n_are_unchanged_by_n_alleles_beside_them(files, tmp_path):
    """The same values, bit for bit as printed, with or without N alleles in the file (same windows)."""
    seqs = files["seqs"]
    _, alone = run_job(files, write_vcf(tmp_path / "a.vcf", plain_rows(seqs)), out=tmp_path / "a.tsv")
    mixed_rows = [r for pair in zip(plain_rows(seqs), n_rows(seqs) + [None]) for r in pair if r is not None]
    _, mixed = run_job(files, write_vcf(tmp_path / "b.vcf", mixed_rows), out=tmp_path / "b.tsv")
    kept = [r for r in mixed if r["status"] != "n_allele"]
    assert kept == alone
    assert all(r["status"] == "ok" for r in alone) and all(r[e] != "NA" for r in alone for e in EFFECTS)
    lower = by_id(alone)["lower"][0]
    s = seqs["chr1"]
    assert (lower["ref"], lower["alt"], lower["flags"]) == (s[27_000], other(s[27_000]), "lowercase")


def test_ref_with_n_keeps_the_n_base_flag(files, tmp_path):
    """REF N over the FASTA's N gap is scored (flag n_base); REF N over a real base is a mismatch
    (still flagged); ALT N over the gap is n_allele whatever its REF."""
    s = files["seqs"]["chr1"]
    g = GAP[0] + 4
    b = GAP[0] - 1  # the base before the gap
    vcf = write_vcf(tmp_path / "v.vcf", [("chr1", g + 1, "ref_n", "N", "A"),
                                         ("chr1", b + 1, "ref_xn", s[b] + "N", s[b]),
                                         ("chr1", 30_001, "ref_n_mismatch", "N", other(s[30_000])),
                                         ("chr1", g + 1, "both_n", "N", "N")])
    summary, rows = run_job(files, vcf, out=tmp_path / "o.tsv")
    first = {k: v[0] for k, v in by_id(rows).items()}
    assert {k: (r["status"], r["flags"]) for k, r in first.items()} == {
        "ref_n": ("ok", "n_base"), "ref_xn": ("ok", "n_base"), "ref_n_mismatch": ("ref_mismatch", "n_base"),
        "both_n": ("n_allele", ".")}
    assert all(np.isfinite(float(r[e])) for r in rows if r["status"] == "ok" for e in EFFECTS)
    assert summary.flags == {"n_base": 3}
    # the same REF N written into a real base's place with --on-ref-mismatch use-vcf-ref: scored, both flags
    _, used = run_job(files, vcf, out=tmp_path / "u.tsv", on_ref_mismatch="use-vcf-ref")
    row = by_id(used)["ref_n_mismatch"][0]
    assert (row["status"], row["flags"]) == ("ok", "n_base,vcf_ref")


def test_n_allele_comes_before_the_genome_dependent_statuses(files, tmp_path):
    """Like invalid_allele, n_allele is decided from the allele's letters alone: an ALT with N on an
    unknown chromosome, too long, or with a wrong REF is n_allele."""
    s = files["seqs"]["chr1"]
    vcf = write_vcf(tmp_path / "v.vcf", [("chrUn", 10, "unknown", "A", "N"),
                                         ("chr1", 801, "long", s[800], s[800] + "N" * 3000),
                                         ("chr1", 501, "mismatch", other(s[500]), "N"),
                                         ("chr1", 601, "iupac", s[600], "NR"),
                                         ("chr1", 701, "star", s[700], "*")])
    _, rows = run_job(files, vcf, out=tmp_path / "o.tsv")
    assert {k: v[0]["status"] for k, v in by_id(rows).items()} == {
        "unknown": "n_allele", "long": "n_allele", "mismatch": "n_allele", "iupac": "invalid_allele",
        "star": "symbolic_allele"}


def test_symbolic_alts_keep_their_status_and_spelling(files, tmp_path):
    s = files["seqs"]["chr1"]
    ref = s[600]
    alts = ["*", "<DEL>", "<del>", f"{ref}]chr2:100]", f"{ref}."]
    vcf = write_vcf(tmp_path / "v.vcf", [("chr1", 601, f"sym{i}", ref, alt) for i, alt in enumerate(alts)])
    _, rows = run_job(files, vcf, out=tmp_path / "o.tsv")
    first = [v[0] for v in by_id(rows).values()]
    assert [(r["alt"], r["status"], r["flags"]) for r in first] == [(a, "symbolic_allele", ".") for a in alts]
    assert [classify(ref, a.upper()) for a in alts] == ["symbolic"] * len(alts)


def test_vcf_output_carries_n_allele_like_other_statuses(files, tmp_path):
    s = files["seqs"]["chr1"]
    alt = other(s[20_000])
    vcf = write_vcf(tmp_path / "v.vcf", [("chr1", 20_001, "multi", s[20_000], f"{alt},N"),
                                         ("chr1", 501, "mismatch", other(s[500]), s[500]),
                                         ("chr1", 21_001, "alt_n", s[21_000], "N")])
    out = tmp_path / "o.vcf"
    run_job(files, vcf, out=out, out_format="vcf")
    with pysam.VariantFile(str(out)) as reread:
        status_text = reread.header.info["EPI_STATUS"].description
        records = list(reread)
    assert status_text.endswith("(ok, ref_mismatch, unknown_chrom, symbolic_allele, too_long, invalid_allele, "
                                "n_allele)")
    assert records[0].info["EPI_STATUS"] == ("ok", "n_allele") and records[0].info["EPI_FLAGS"] == (".", ".")
    diff = records[0].info["EPI_DIFF_glia"]
    assert np.isfinite(diff[0]) and diff[1] is None
    for record, status in ((records[1], "ref_mismatch"), (records[2], "n_allele")):
        assert record.info["EPI_STATUS"] == (status,)
        assert all(record.info[f"EPI_{e.upper()}_{t}"] == (None,) for e in EFFECTS for t in TRACKS)
    # the same rows as TSV say the same
    _, rows = run_job(files, vcf, out=tmp_path / "o.tsv")
    assert [r["status"] for r in rows if r["track"] == "glia"] == ["ok", "n_allele", "ref_mismatch", "n_allele"]


def test_strict_refuses_an_n_allele_in_one_line(files, tmp_path):
    s = files["seqs"]["chr1"]
    vcf = write_vcf(tmp_path / "v.vcf", [("chr1", 20_001, "snv", s[20_000], other(s[20_000])),
                                         ("chr1", 21_001, "alt_n", s[21_000], "ACN")])
    out = tmp_path / "o.tsv"
    args = ["score-variants", "--null-size", "0", str(vcf), "--fasta", str(files["fasta"]), "--cons",
            str(files["cons"]), "--model", str(files["model"]), "--device", "cpu", "--out", str(out)]
    result = CliRunner().invoke(app, args + ["--strict"])
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("epiformer: error:")]
    assert errors == [f"epiformer: error: {vcf}: chr1:21001 {s[21_000]}>ACN has status n_allele (--strict): fix or "
                      "filter that record, or drop --strict to get a row with its status"], result.stderr
    assert not out.exists()
    assert CliRunner().invoke(app, args).exit_code == 0  # without --strict: a row with its status
    assert [r["status"] for r in read_tsv(out)] == ["ok"] * 3 + ["n_allele"] * 3


def test_explain_variants_skips_n_alleles_by_status(files, tmp_path, caplog):
    from epiformer_cli.jobs.explain import explain
    from epiformer_cli.options import ExplainOptions

    s = files["seqs"]["chr1"]
    alleles = [Allele(0, 1, "chr1", 20_001, 20_000, 20_001, "snv", s[20_000], other(s[20_000]), "snv"),
               Allele(1, 1, "chr1", 21_001, 21_000, 21_001, "n", s[21_000], "N", "snv")]
    with caplog.at_level(logging.WARNING, logger="epiformer_cli.jobs.explain"):
        summary = explain(files["fasta"], files["cons"], files["model"], tmp_path / "out", variants=alleles,
                          options=ExplainOptions.of(device="cpu", plot=0, flank=2, method="gradient"))
    assert summary.regions == 1 and summary.skipped == {"n_allele": 1}
    assert [r.getMessage() for r in caplog.records if "cannot be explained" in r.getMessage()] == [
        "1 allele(s) cannot be explained (n_allele 1): see score-variants for their status"]


def test_every_status_and_flag_is_named_in_the_vcf_header():
    status, flags = vcf_info_definitions(TRACKS)[:2]
    assert status[3] == ("epiformer score-variants status per ALT (ok, ref_mismatch, unknown_chrom, symbolic_allele, "
                         "too_long, invalid_allele, n_allele)")
    assert flags[3] == "epiformer flags per ALT, joined by | (alias, edge_padded, duplicate, lowercase, vcf_ref, n_base)"
    assert set(STATUSES) - {"no_alt"} <= set(status[3][status[3].index("(") + 1:-1].split(", "))
    assert set(FLAGS) == set(flags[3][flags[3].index("(") + 1:-1].split(", "))


def test_reader_upper_cases_bases_only_and_flags_lowercase(tmp_path):
    """REF and base ALTs are upper-cased (flag lowercase, also for a record without ALT); a symbolic
    ALT is kept as written (a breakend names its mate's chromosome: chr2 is not CHR2)."""
    from epiformer_cli.io.vcf import read_vcf

    vcf = write_vcf(tmp_path / "v.vcf", [("chr1", 10, "a", "ac", "aN,<del>,G]chr2:5]"),
                                         ("chr1", 20, "b", "G", "<DEL>"),
                                         ("chr1", 30, "c", "t", ".")])
    with read_vcf(vcf) as reader:
        got = [(a.ref, a.alt, a.kind, a.flags) for record in reader.records() for a in record.alleles]
    assert got == [("AC", "AN", "substitution", ["lowercase"]), ("AC", "<del>", "symbolic", ["lowercase"]),
                   ("AC", "G]chr2:5]", "symbolic", ["lowercase"]), ("G", "<DEL>", "symbolic", []),
                   ("T", ".", "none", ["lowercase"])]


def test_too_long_starts_one_base_past_the_models_flank(files, tmp_path):
    """REF or ALT of crop_bins x 128 bp (2,048 for the tiny preset) is scored; one base more is
    too_long. At the end of a window's predicted part (the worst place) the longest ones fit."""
    from epiformer_cli.model.modelfile import load_model

    cfg = load_model(files["model"]).config
    limit, s = cfg.crop_bp, files["seqs"]["chr1"]
    assert limit == 2_048
    last = 2 * cfg.out_bp - 1  # the last predicted base of grid window 1 (0-based)
    vcf = write_vcf(tmp_path / "v.vcf", [
        ("chr1", last + 1, "del_max", s[last:last + limit], s[last]),
        ("chr1", last + 1, "del_over", s[last:last + limit + 1], s[last]),
        ("chr1", last + 1, "ins_max", s[last], s[last] + "A" * (limit - 1)),
        ("chr1", last + 1, "ins_over", s[last], s[last] + "A" * limit)])
    _, rows = run_job(files, vcf, out=tmp_path / "o.tsv")
    first = {k: v[0] for k, v in by_id(rows).items()}
    assert {k: r["status"] for k, r in first.items()} == {
        "del_max": "ok", "del_over": "too_long", "ins_max": "ok", "ins_over": "too_long"}
    assert all(np.isfinite(float(first[k][e])) for k in ("del_max", "ins_max") for e in EFFECTS)
