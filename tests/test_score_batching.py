"""score-variants' batched alleles (Transformer + head batches across windows) equal the
one-allele-at-a-time computation within float32 rounding through the network
(``tests.helpers.float_tolerance``, at the size of the allele's predictions): other row counts are
other kernel blockings on any CPU. An effect over n bins sums 2 n such values; log2fc divides each
sum's bound by 1 + the sum, over ln 2."""

import functools

import numpy as np
import pytest

from epiformer_cli.model import incremental
from epiformer_cli.variants import scoring
from epiformer_cli.variants.effects import EFFECTS
from epiformer_cli.model.modelfile import load_model
from tests.helpers import HEADER, PUBLISHED_TINY, float_tolerance, network_reductions, other, run_job, score_files


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    return {"epiformer": score_files(tmp_path_factory.mktemp("batch")),
            "published": score_files(tmp_path_factory.mktemp("batch_published"), **PUBLISHED_TINY)}


def mixed_vcf(path, seqs):
    """Dense SNVs over several grid windows of both chromosomes (window edges included), an MNV,
    a REF == ALT record, a deletion and an insertion: every row kind of a block."""
    rng = np.random.default_rng(5)
    s = seqs["chr1"]
    rows = [("chr1", p, f"s{i}", s[p], other(s[p], 1 + i % 3))
            for i, p in enumerate([0, 12_287, 12_288, 39_999] + rng.integers(0, 40_000, 24).tolist())]
    rows += [("chr2", p, f"t{i}", seqs["chr2"][p], other(seqs["chr2"][p], 2))
             for i, p in enumerate(rng.integers(0, 20_000, 8).tolist())]
    rows += [("chr1", 7000, "mnv", s[7000:7003], other(s[7000]) + s[7001] + other(s[7002])),
             ("chr1", 9000, "same", s[9000], s[9000]),
             ("chr1", 30_000, "del", s[30_000:30_004], s[30_000]),
             ("chr1", 5000, "ins", s[5000], s[5000] + "GA")]
    rows.sort(key=lambda r: (r[0], r[1]))
    path.write_text(HEADER + "".join(f"{c}\t{p + 1}\t{i}\t{r}\t{a}\t.\t.\t.\n" for c, p, i, r, a in rows))
    return path


def scored(monkeypatch, files, vcf, out, *, batched=True, **kw):
    """Run the job; return {(chrom, pos, alt): (ref_pred, alt_pred, effects)} of every ok allele."""
    got = {}
    finish, init = scoring.VariantScorer._finish, scoring.VariantScorer.__init__

    def capture(self, task, start, ref_pred, alt_pred):
        finish(self, task, start, ref_pred, alt_pred)
        a = task.allele
        got[(a.chrom, a.pos, a.alt)] = (np.array(ref_pred, np.float64), np.array(alt_pred, np.float64), task.result)

    with monkeypatch.context() as m:
        m.setattr(scoring.VariantScorer, "_finish", capture)
        m.setattr(scoring.VariantScorer, "__init__", functools.partialmethod(init, batched=batched))
        run_job(files, vcf, out=out, **kw)
    return got


def assert_within_tolerance(batched, one, files, score_bins=5):
    assert batched.keys() == one.keys() and len(one) > 30
    net = network_reductions(load_model(files["model"]).config)
    cols = {e: i for i, e in enumerate(EFFECTS)}
    for key, (ref1, alt1, eff1) in one.items():
        ref2, alt2, eff2 = batched[key]
        # float32 rounding through the network at the size of this allele's predictions (5.6e-5 of
        # them); an allele given a neighbour's row moves its values by its effect, up to 1e-1
        scale = max(np.abs(ref1).max(), np.abs(alt1).max())
        for got, want in ((ref2, ref1), (alt2, alt1)):
            assert np.all(np.abs(got - want) <= float_tolerance(scale, **net)), key
        # effects: sums over the score bins (ref_sum, alt_sum, diff, log2fc) or over all bins
        sum_tol = float_tolerance(scale, summed=score_bins, **net)
        for e, tol in (("ref_sum", sum_tol), ("alt_sum", sum_tol),
                       ("diff", float_tolerance(scale, summed=2 * score_bins, **net))):
            assert np.all(np.abs(eff2[:, cols[e]] - eff1[:, cols[e]]) <= tol), (key, e)
        window = float_tolerance(scale, summed=2 * ref1.shape[-1], **net)
        for e in ("sad", "max_abs", "l2"):
            assert np.all(np.abs(eff2[:, cols[e]] - eff1[:, cols[e]]) <= window), (key, e)
        # log2fc = log2((alt_sum + 1) / (ref_sum + 1)): each sum's error over (sum + 1), over ln 2, and
        # the rounding of the log itself
        low = 1 + np.minimum(eff1[:, cols["ref_sum"]], eff1[:, cols["alt_sum"]])
        log_tol = 2 * sum_tol / low / np.log(2) + float_tolerance(np.abs(eff1[:, cols["log2fc"]]))
        assert np.all(np.abs(eff2[:, cols["log2fc"]] - eff1[:, cols["log2fc"]]) <= log_tol), key


@pytest.mark.parametrize("family", ["epiformer", "published"])
@pytest.mark.parametrize("sizes", [None, (3, 7)], ids=["model-sized", "3-rows-7-per-block"])
def test_batched_alleles_equal_one_at_a_time(families, tmp_path, monkeypatch, family, sizes):
    """Model-sized batches, and tiny ones that split windows' substitutions across Transformer
    batches and windows across blocks, give the one-at-a-time predictions and effects within the
    stated tolerance (RC averaging on: both views' rows are batched)."""
    files = families[family]
    vcf = mixed_vcf(tmp_path / "v.vcf", files["seqs"])
    one = scored(monkeypatch, files, vcf, tmp_path / "one.tsv", batched=False)
    with monkeypatch.context() as m:
        if sizes:
            m.setattr(incremental, "trunk_batch_rows", lambda config: sizes[0])
            m.setattr(scoring, "block_rows", lambda config, trunk_rows=None: sizes[1])
        batched = scored(monkeypatch, files, vcf, tmp_path / "batched.tsv")
    assert_within_tolerance(batched, one, files)
    assert all(np.array_equal(batched[k][0], one[k][0]) for k in one)  # references run alone: exact
    same = [k for k in one if k[0] == "chr1" and k[1] == 9001]
    assert same and all(np.all(batched[k][2][:, 2:] == 0) for k in same)  # REF == ALT: exactly no effect
    assert max(float(np.abs(e[:, 2]).max()) for _, _, e in one.values()) > 1e-3  # effects are not all ~0


def test_chunk_size_changes_batches_not_results_beyond_tolerance(families, tmp_path, monkeypatch):
    files = families["epiformer"]
    vcf = mixed_vcf(tmp_path / "v.vcf", files["seqs"])
    whole = scored(monkeypatch, files, vcf, tmp_path / "a.tsv", chunk_size=1000)
    small = scored(monkeypatch, files, vcf, tmp_path / "b.tsv", chunk_size=3, batch_size=1)
    assert_within_tolerance(small, whole, files)


def test_plain_path_is_exact_at_any_grouping(families, tmp_path, monkeypatch):
    """The plain path's windows of a block share one engine call, whose outputs do not depend on
    the batch: fast=False gives the same bits batched or not."""
    files = families["epiformer"]
    vcf = mixed_vcf(tmp_path / "v.vcf", files["seqs"])
    one = scored(monkeypatch, files, vcf, tmp_path / "one.tsv", batched=False, fast=False, rc_average=False)
    batched = scored(monkeypatch, files, vcf, tmp_path / "batched.tsv", fast=False, rc_average=False)
    assert batched.keys() == one.keys()
    for key, (ref1, alt1, eff1) in one.items():
        assert np.array_equal(batched[key][0], ref1) and np.array_equal(batched[key][1], alt1)
        assert np.array_equal(batched[key][2], eff1)


def test_batch_sizes_come_from_the_model_alone():
    from epiformer_cli.model.config import preset

    assert incremental.trunk_batch_rows(preset("tiny")) == 64
    assert incremental.trunk_batch_rows(preset("epiformer")) == 1  # 51 GFLOP a row: batching only adds memory
    for name in ("tiny", "epiformer", "published"):
        cfg = preset(name)
        assert incremental.trunk_batch_rows(cfg) <= scoring.block_rows(cfg) <= 4096
