"""`epiformer explain`: ISM and gradient contributions, their files, resuming, bad input.

Fixtures: a genome whose chrB is the reverse complement of chrA (conservation mirrored too), so a
region and its mirror image must get mirrored contributions under strand averaging; a tiny model
whose outputs move with single bases.
"""

import json

import numpy as np
import pyBigWig
import pytest
import torch
from typer.testing import CliRunner

from epiformer_cli.cli.app import app
from epiformer_cli.data.encoding import inputs_from_one_hot, one_hot
from epiformer_cli.errors import InputFileError, UsageError
from epiformer_cli.explain.gradient import GradientExplainer
from epiformer_cli.explain.ism import IsmExplainer
from epiformer_cli.explain.outputs import kept_spans, load_contributions
from epiformer_cli.explain.regions import Region, place
from epiformer_cli.inference.engine import InferenceEngine
from epiformer_cli.jobs.explain import explain
from epiformer_cli.model.modelfile import load_model, save_model
from epiformer_cli.options import ExplainOptions
from tests.helpers import (PUBLISHED_TINY, float_tolerance, network_reductions, sensitive_model, write_bigwig,
                           write_fasta)

N = 40_960  # a multiple of 128: mirrored windows then sit on the bin grid too
TRACKS = ["neuron", "glia", "astro"]
FAMILIES = [pytest.param({}, id="epiformer"), pytest.param(PUBLISHED_TINY, id="published")]
COMPLEMENT = str.maketrans("ACGT", "TGCA")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("explain")
    rng = np.random.default_rng(3)
    a = "".join(rng.choice(list("ACGT"), N))
    a = a[:30_000] + "NNNN" + a[30_004:]  # N bases inside a region further down
    seqs = {"chrA": a, "chrB": a.translate(COMPLEMENT)[::-1]}
    fasta = write_fasta(folder / "g.fa", seqs)
    runs = [(i, i + 40, float(rng.random())) for i in range(0, N, 40)]
    cons = write_bigwig(folder / "c.bw", {"chrA": N, "chrB": N},
                        {"chrA": runs, "chrB": [(N - e, N - s, v) for s, e, v in reversed(runs)]})
    model = sensitive_model(seed=4)
    path = save_model(folder / "m.pt", model, model.config, TRACKS)
    return {"fasta": fasta, "cons": cons, "model": path, "seqs": seqs, "folder": folder}


def run(files, out, bed=None, vcf=None, **options):
    options.setdefault("device", "cpu")
    options.setdefault("plot", 0)
    return explain(files["fasta"], files["cons"], files["model"], out, regions=bed, variants=vcf,
                   options=ExplainOptions.of(**options))


def write_bed(path, lines):
    path.write_text("".join("\t".join(map(str, line)) + "\n" for line in lines))
    return path


def window_inputs(seed, cfg):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 4, cfg.seq_len).astype(np.uint8)
    codes[8_205] = 4
    return codes, rng.random(cfg.seq_len).astype(np.float32)


# ---- exactness ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_ism_equals_plain_per_mutant_passes(family):
    """Every mutant's effect equals full reference + mutant forward passes through the engine,
    within float32 rounding through the network (tests.helpers.float_tolerance)."""
    model = sensitive_model(seed=1, **family)
    cfg = model.config
    codes, cons = window_inputs(0, cfg)
    engine = InferenceEngine(model, device="cpu", rc_average=True, batch_size=4)
    first, last = 8_190, 8_230
    bins = ((first - cfg.crop_bp) // 128, -(-(last - cfg.crop_bp) // 128))
    got = IsmExplainer(engine).explain(codes, cons, first, last, bins)
    rows, keys = [], []
    for p in range(first, last):
        for b in range(4):
            if codes[p] < 4 and b != codes[p]:
                mutant = codes.copy()
                mutant[p] = b
                rows.append(mutant)
                keys.append((p - first, b))
    ref_bins = engine.predict(codes[None], cons[None])[0][:, bins[0]:bins[1]]
    ref = ref_bins.astype(np.float64).sum(-1)
    preds = engine.predict(np.stack(rows), np.repeat(cons[None], len(rows), 0))
    scale = max(np.abs(ref_bins).max(), np.abs(preds[:, :, bins[0]:bins[1]]).max())  # the predictions' size
    n_bins = bins[1] - bins[0]
    # the incremental tower and finish_many vs full passes: float32 rounding through the network, for
    # a sum of n_bins outputs: 8e-5..1.1e-4 here (Zen 4 saw 1.5e-6, AVX2 kernels 7e-7). Real bugs move
    # the totals by far more: summing a wrong bin by 5.7e-3..6.4e-2, a missing strand average by
    # 5.3e-4..3.9e-2 (5x the bound on one track of six, >= 1.2e-2 on the others)
    total_tol = float_tolerance(scale, summed=n_bins, **network_reductions(cfg))
    # an effect is the difference of two such sums (1.2e-4..1.6e-4; seen: 2e-6). A wrong position, a
    # wrong base or a missing strand average moves the effects by 3.6e-2..9e-2; half of all effects
    # exceed 5.7e-3, 35x the bound
    effect_tol = float_tolerance(scale, summed=2 * n_bins, **network_reductions(cfg))
    want = np.zeros_like(got.matrix, dtype=np.float64)
    want[:, :, 8_205 - first] = np.nan
    for (p, b), y in zip(keys, preds):
        want[:, b, p] = y[:, bins[0]:bins[1]].astype(np.float64).sum(-1) - ref
    np.testing.assert_allclose(got.total, ref, rtol=0, atol=total_tol)
    assert np.isnan(got.matrix[:, :, 8_205 - first]).all() and np.isnan(got.contrib[:, 8_205 - first]).all()
    assert np.nanmax(np.abs(want)) > 1e-3  # the model does react to single bases
    np.testing.assert_allclose(got.matrix, want, rtol=0, atol=effect_tol)
    # the contribution of a reference base: minus the mean effect of its three mutations (a mean of
    # three effects, each within effect_tol)
    np.testing.assert_allclose(got.contrib, -np.nansum(want, axis=1) / 3 * np.where(np.isnan(want[:, 0]), np.nan, 1),
                               rtol=0, atol=effect_tol)


@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_matches_finite_differences(family):
    """In float64, the hypothetical contributions equal central differences of the strand-averaged
    summed prediction with the per-position mean over the four bases removed."""
    model = sensitive_model(seed=2, **family).double()
    cfg = model.config
    codes, cons = window_inputs(1, cfg)
    engine = InferenceEngine(model, device="cpu", rc_average=True, batch_size=1)
    first, last = 8_200, 8_212
    bins = ((first - cfg.crop_bp) // 128, -(-(last - cfg.crop_bp) // 128))
    got = GradientExplainer(model, engine).explain(codes, cons, first, last, bins)
    x0 = one_hot(torch.from_numpy(codes)[None], dtype=torch.float64)
    c0 = torch.from_numpy(cons)[None].double()

    def summed(x):
        y = model(inputs_from_one_hot(x, c0, cfg.conservation))
        y_rc = model(inputs_from_one_hot(x.flip(1).flip(2), c0.flip(1), cfg.conservation)).flip(-1)
        return ((y + y_rc) / 2)[0, :, bins[0]:bins[1]].sum(-1)

    eps = 1e-5
    n_bins = bins[1] - bins[0]
    net64 = network_reductions(cfg, torch.float64)
    with torch.no_grad():
        total = summed(x0).numpy()
        # autograd's pass vs this one: float64 rounding through the network for a sum of n_bins outputs
        # (softplus outputs are non-negative, so the sums bound each output)
        tol = float_tolerance(np.abs(total).max(), summed=n_bins, **net64)
        np.testing.assert_allclose(got.total, total, rtol=0, atol=tol)
        # a central difference errs by the float64 rounding of its two passes over the step 2 eps
        # (2e-8 here), and by eps**2 / 6 * |f'''| (1e-9 here: it quadruples at 2 eps, and a max-pool
        # switches winner past 1e-4); the contributions are stored in float32, one rounding more. A
        # wrong base, sign or missing mean moves them by their size, 1e-2..6e-2
        fd_rounding = float_tolerance(np.abs(total).max(), summed=2 * n_bins, **net64) / (2 * eps)
        for p in (0, 7):
            fd = []
            for b in range(4):
                up, down = x0.clone(), x0.clone()
                up[0, b, first + p] += eps
                down[0, b, first + p] -= eps
                fd.append(((summed(up) - summed(down)) / (2 * eps)).numpy())
            fd = np.stack(fd, axis=1)
            fd -= fd.mean(axis=1, keepdims=True)
            np.testing.assert_allclose(got.matrix[:, :, p], fd, rtol=0,
                                       atol=fd_rounding + float_tolerance(np.abs(fd).max()))
    assert np.isnan(got.matrix[:, :, 8_205 - first]).all()  # an N base has no reference to explain
    # four float64 values summing to 0 (to 1e-16), each rounded once to float32
    m0 = got.matrix[:, :, 0].astype(np.float64)
    np.testing.assert_allclose(m0.sum(axis=1), 0, rtol=0, atol=float_tolerance(np.abs(m0).max(), terms=4))


@pytest.mark.parametrize("method", ["ism", "gradient"])
def test_contributions_of_the_reverse_complement_are_mirrored(files, tmp_path, method):
    """chrB is chrA reverse-complemented: a region and its mirror give mirrored contributions."""
    s, e = 18_412, 18_452
    bed = write_bed(tmp_path / "r.bed", [("chrA", s, e, "fwd"), ("chrB", N - e, N - s, "rev")])
    run(files, tmp_path / "out", bed, method=method)
    got = load_contributions(tmp_path / "out" / "contrib.npz")
    (m_a, c_a), (m_b, c_b) = got.row(0), got.row(1)
    assert np.abs(c_a).max() > 1e-3
    # the mirrored region's bins are summed in the other order and its mutants patched at other
    # offsets: float32 rounding through the network at the size of the predictions (the summed
    # predictions bound each non-negative output), for sums over the bins the span overlaps; a
    # gradient adds the backward pass. Unmirrored positions or bases move contributions by 7e-2..1.7e-1
    net = network_reductions(load_model(files["model"]).config)
    n_bins = -(-e // 128) - s // 128
    sums = got.table[[f"pred_sum.{t}" for t in TRACKS]].to_numpy()
    if method == "ism":  # effects: differences of two sums of predictions
        tol = float_tolerance(np.abs(sums).max(), summed=2 * n_bins, **net)
    else:  # hypothetical contributions: a forward and a backward pass, at the gradients' size
        tol = float_tolerance(np.nanmax(np.abs(m_a)), **dict(net, depth=2 * net["depth"]))
    np.testing.assert_allclose(c_b[:, ::-1], c_a, rtol=0, atol=tol)
    np.testing.assert_allclose(m_b[:, ::-1, ::-1], m_a, rtol=0, atol=tol)
    np.testing.assert_allclose(sums[1], sums[0], rtol=0, atol=float_tolerance(np.abs(sums).max(), summed=n_bins, **net))
    assert got.sequence(1) == got.sequence(0).translate(COMPLEMENT)[::-1]


# ---- the files -------------------------------------------------------------------------------------------
def test_outputs_agree_with_each_other(files, tmp_path):
    """bigWig values = the npz projection; regions.tsv = the npz's sums and strongest bases."""
    bed = write_bed(tmp_path / "r.bed", [("chrA", 29_990, 30_020, "with_N"), ("chrB", 1_000, 1_013),
                                         ("chrA", 5_000, 5_040, "second")])
    summary = run(files, tmp_path / "out", bed, method="ism", tracks=["glia", "neuron"])
    out = tmp_path / "out"
    assert summary.regions == 3 and summary.computed == 3 and summary.tracks == ["glia", "neuron"]
    assert summary.mutants == 3 * (30 - 4 + 13 + 40)
    assert sorted(p.name for p in out.iterdir()) == ["contrib.glia.bw", "contrib.neuron.bw", "contrib.npz",
                                                    "explain.json", "regions.tsv"]
    got = load_contributions(out / "contrib.npz")
    assert got.tracks == ["glia", "neuron"] and got.method == "ism"
    assert list(got.table["name"]) == ["with_N", "chrB:1000-1013", "second"]
    assert list(got.offsets) == [0, 30, 43, 83]
    assert got.sequence(1) == files["seqs"]["chrB"][1_000:1_013]
    with np.load(out / "contrib.npz", allow_pickle=False) as raw:  # plain arrays, no pickles
        assert raw["matrix"].shape == (2, 4, 83)
    for t, track in enumerate(got.tracks):
        bw = pyBigWig.open(str(out / f"contrib.{track}.bw"))
        assert list(bw.chroms().items()) == [("chrA", N), ("chrB", N)]
        for i, (chrom, start, end) in enumerate(zip(got.table["chrom"], got.table["start"], got.table["end"])):
            want = got.row(i)[1][t]
            values = np.array(bw.values(chrom, int(start), int(end)), dtype=np.float32)
            np.testing.assert_array_equal(np.isnan(values), np.isnan(want))  # N bases have no value
            # a bigWig stores float32: the npz's own float32 values come back, bit for bit
            np.testing.assert_array_equal(values[~np.isnan(values)], want[~np.isnan(want)])
        bw.close()
    rows = [line.split("\t") for line in (out / "regions.tsv").read_text().splitlines()]
    header, rows = rows[0], rows[1:]
    assert len(rows) == 3 * 2
    row = dict(zip(header, rows[0]))
    contrib = got.row(0)[1][0]
    top = int(np.nanargmax(np.abs(contrib)))
    assert (row["name"], row["track"], row["allele"]) == ("with_N", "glia", ".")
    assert int(row["top_pos"]) == 29_990 + top and row["top_base"] == files["seqs"]["chrA"][29_990 + top]
    # regions.tsv prints 6 significant digits (%.6g): half a unit in the 6th digit apart, no more
    for printed, value in ((row["top_contrib"], contrib[top]), (row["pred_sum"], got.table["pred_sum.glia"][0])):
        assert float(printed) == pytest.approx(value, rel=0, abs=float_tolerance(abs(float(printed)), dtype="%.6g"))
    provenance = json.loads((out / "explain.json").read_text())
    assert provenance["options"]["method"] == "ism" and provenance["tracks"] == ["glia", "neuron"]


def test_overlapping_regions_split_their_overlap_in_the_bigwig():
    regions = [Region(0, "c", 100, 200, "a"), Region(1, "c", 150, 260, "b"), Region(2, "c", 300, 310, "c"),
               Region(3, "d", 0, 10, "d")]
    spans = kept_spans(regions, {"c": 0, "d": 1})
    assert [(r.name, a, b) for r, a, b in spans] == [("a", 100, 175), ("b", 175, 260), ("c", 300, 310), ("d", 0, 10)]


def test_variants_ref_and_alt_flip_the_sign(files, tmp_path):
    """An SNV's ISM effect in the reference sequence is minus the reverse mutation's effect in the
    alternative sequence, and equals the change of the predicted sum; an insertion gets a longer
    alt row."""
    seq = files["seqs"]["chrA"]
    snv, ins = 10_000, 20_000
    alt_base = "ACGT"[("ACGT".index(seq[snv]) + 1) % 4]
    vcf = tmp_path / "v.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n##contig=<ID=chrA,length=40960>\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
                   f"chrA\t{snv + 1}\trs1\t{seq[snv]}\t{alt_base}\t.\t.\t.\n"
                   f"chrA\t{ins + 1}\t.\t{seq[ins]}\t{seq[ins]}GATTACA\t.\t.\t.\n"
                   f"chrA\t{ins + 11}\tbad\tN\tA\t.\t.\t.\n")
    summary = run(files, tmp_path / "out", vcf=vcf, flank=6, plot=1)
    assert summary.regions == 2 and summary.skipped == {"ref_mismatch": 1}
    got = load_contributions(tmp_path / "out" / "contrib.npz")
    assert list(got.table["allele"]) == ["ref", "alt", "ref", "alt"]
    assert list(got.table["variant"])[:2] == [f"chrA:{snv + 1}:{seq[snv]}>{alt_base}"] * 2
    assert [len(got.sequence(i)) for i in range(4)] == [13, 13, 13, 20]
    assert got.sequence(3) == seq[ins - 6:ins + 1] + "GATTACA" + seq[ins + 1:ins + 7]
    (m_ref, _), (m_alt, _) = got.row(0), got.row(1)
    ref_b, alt_b = "ACGT".index(seq[snv]), "ACGT".index(alt_base)
    sums = got.table[[f"pred_sum.{t}" for t in TRACKS]].to_numpy()
    # each effect is a difference of two predictions summed over the bins the region overlaps, made
    # from another reference window: float32 rounding through the network at the size of the
    # predictions (the sums bound each non-negative output): 8e-5 here, where Zen 4 saw 7.2e-7. The
    # wrong base moves these effects by 2.6e-3..2.3e-2, a lost sign by 5e-3..3.4e-2
    n_bins = -(-(snv + 7) // 128) - (snv - 6) // 128
    net = network_reductions(load_model(files["model"]).config)
    tol = float_tolerance(np.abs(sums).max(), summed=2 * n_bins, **net)
    np.testing.assert_allclose(m_ref[:, alt_b, 6], -m_alt[:, ref_b, 6], rtol=0, atol=tol)
    np.testing.assert_allclose(sums[1] - sums[0], m_ref[:, alt_b, 6], rtol=0, atol=tol)
    plots = sorted(p.name for p in (tmp_path / "out" / "plots").iterdir())
    assert plots == sorted([f"0001.rs1.{t}.png" for t in TRACKS] + [f"0001.rs1.variant.{t}.png" for t in TRACKS])


# ---- resuming ------------------------------------------------------------------------------------------
def test_a_failed_run_resumes_and_ends_identical(files, tmp_path, monkeypatch):
    bed = write_bed(tmp_path / "r.bed", [("chrA", 3_000 + 500 * i, 3_010 + 500 * i) for i in range(4)])
    run(files, tmp_path / "whole", bed)
    import epiformer_cli.explain.outputs as outputs

    real, calls = outputs.write_piece, []

    def failing(handle, *args):
        if len(calls) == 2:
            raise KeyboardInterrupt  # as Ctrl-C would, mid-run
        calls.append(1)
        real(handle, *args)

    monkeypatch.setattr(outputs, "write_piece", failing)
    with pytest.raises(KeyboardInterrupt):
        run(files, tmp_path / "out", bed)
    assert not (tmp_path / "out" / "contrib.npz").exists()
    assert len(list((tmp_path / "out" / "explain.parts").glob("region-*.npz"))) == 2
    monkeypatch.setattr(outputs, "write_piece", real)
    summary = run(files, tmp_path / "out", bed)
    assert (summary.resumed, summary.computed) == (2, 2)
    assert not (tmp_path / "out" / "explain.parts").exists()
    for name in ("contrib.npz", "regions.tsv", "contrib.neuron.bw"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name


@pytest.mark.parametrize("how", ["--shard", "SLURM array"])
def test_shards_run_one_after_another_equal_the_unsharded_run(files, tmp_path, how):
    bed = write_bed(tmp_path / "r.bed", [("chrA", 3_000 + 700 * i, 3_012 + 700 * i, f"r{i}") for i in range(5)]
                    + [("chrB", 9_000, 9_010, "rb")])
    run(files, tmp_path / "whole", bed, plot=1)
    out, summaries = tmp_path / "sharded", []
    for i in (3, 1, 2):  # in any order: the last to finish writes the outputs
        if how == "--shard":
            summaries.append(run(files, out, bed, plot=1, shard=f"{i}/3"))
        else:
            environ = {"SLURM_ARRAY_TASK_ID": str(i), "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "1"}
            summaries.append(explain(files["fasta"], files["cons"], files["model"], out, regions=bed,
                                     options=ExplainOptions.of(device="cpu", plot=1), environ=environ))
        assert (out / "explain.json").exists() == (len(summaries) == 3)
    assert [s.assembled for s in summaries] == [False, False, True]
    assert [s.regions for s in summaries] == [2, 2, 2]  # round-robin: regions i, i + 3
    assert sum(s.computed for s in summaries) == 6
    assert not (out / "explain.parts").exists()
    whole = sorted(p.relative_to(tmp_path / "whole") for p in (tmp_path / "whole").rglob("*") if p.is_file())
    assert whole == sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    for name in whole:
        assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name


def test_a_shard_names_the_regions_still_missing(files, tmp_path, caplog):
    import logging

    bed = write_bed(tmp_path / "r.bed", [("chrA", 3_000 + 700 * i, 3_004 + 700 * i, f"r{i}") for i in range(4)])
    with caplog.at_level(logging.INFO):
        summary = run(files, tmp_path / "out", bed, shard="2/2")
    assert not summary.assembled and not (tmp_path / "out" / "contrib.npz").exists()
    assert "2 of 4 regions are missing: r0, r2" in caplog.text
    assert "belong to shard(s) 1/2" in caplog.text


def test_finished_results_are_refused_without_force(files, tmp_path):
    bed = write_bed(tmp_path / "r.bed", [("chrA", 3_000, 3_004)])
    run(files, tmp_path / "out", bed)
    with pytest.raises(UsageError, match="already holds explain results.*--force"):
        run(files, tmp_path / "out", bed)
    summary = run(files, tmp_path / "out", bed, force=True, tracks=["astro"])
    assert summary.computed == 1
    assert sorted(p.name for p in (tmp_path / "out").glob("contrib.*.bw")) == ["contrib.astro.bw"]


# ---- bad input -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("line, message", [
    (("chrA", 100, 12_300), r"r\.bed:2: region chrA:100-12300 is 12,200 bp, longer than the model's output span "
                            r"allows \(12,161 bp\): split it"),
    (("chrA", 40_900, 41_000), r"runs past the end of chrA \(40,960 bp\)"),
    (("chrZ", 1, 10), r"region chrZ:1-10 is on 'chrZ', which the FASTA lacks"),
    (("chrA", 10, 10), r"empty or inverted"),
])
def test_bad_regions_are_refused_before_anything_is_written(files, tmp_path, line, message):
    bed = write_bed(tmp_path / "r.bed", [("chrA", 0, 10), line])
    with pytest.raises(InputFileError, match=message):
        run(files, tmp_path / "out", bed)
    assert not (tmp_path / "out").exists()


def test_too_many_mutants_are_refused_with_a_time_estimate(files, tmp_path):
    bed = write_bed(tmp_path / "r.bed", [("chrA", 0, 2_000), ("chrA", 4_000, 5_000)])
    with pytest.raises(UsageError, match=r"ISM of 2 region\(s\) \(3,000 bp\) is 9,000 mutants, more than --max-mutants "
                                         r"1,000; it would take about \d+ (s|min) on cpu: raise --max-mutants, use "
                                         r"--method gradient"):
        run(files, tmp_path / "out", bed, max_mutants=1_000)
    assert not (tmp_path / "out").exists()
    run(files, tmp_path / "grad", bed, max_mutants=1_000, method="gradient", rc_average=False)  # not guarded


def test_placement_keeps_the_bin_grid_and_centres():
    from epiformer_cli.model.config import preset

    cfg = preset("tiny")
    p = place(18_412, 18_452, cfg)
    assert p.out_start % 128 == 0 and p.out_start == 18_432 - 6_144 and p.window == p.out_start - cfg.crop_bp
    assert p.bins == (47, 49) and (p.first, p.last) == (18_412 - p.window, 18_452 - p.window)
    longest = (cfg.out_bins - 1) * 128 + 1
    assert place(127, 127 + longest, cfg).bins == (0, 96)
    with pytest.raises(UsageError):
        place(127, 128 + longest, cfg)


# ---- the command line ----------------------------------------------------------------------------------
def test_cli_writes_the_outputs_and_says_so(files, tmp_path, monkeypatch):
    bed = write_bed(tmp_path / "r.bed", [("chrA", 3_000, 3_006, "peak one")])
    monkeypatch.setenv("EPIFORMER_MODEL", str(files["model"]))
    result = CliRunner().invoke(app, ["explain", "--regions", str(bed), "--out", str(tmp_path / "out"), "--fasta",
                                      str(files["fasta"]), "--cons", str(files["cons"]), "--device", "cpu",
                                      "--method", "gradient", "--tracks", "glia", "--plot", "1"])
    assert result.exit_code == 0, result.output
    assert "explained 1 region(s) by gradient" in result.output
    assert (tmp_path / "out" / "plots" / "0001.peak_one.glia.png").exists()
    result = CliRunner().invoke(app, ["explain", "--regions", str(bed), "--out", str(tmp_path / "out"), "--fasta",
                                      str(files["fasta"]), "--cons", str(files["cons"])])
    assert result.exit_code == 2 and "already holds explain results" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args, message", [
    ([], "give --regions BED or --variants VCF"),
    (["--method", "saliency"], "--method must be one of ism, gradient"),
    (["--flank", "-1"], "--flank must be at least 0"),
    (["--shard", "4/3"], "--shard 4/3: I must be between 1 and N"),
])
def test_cli_usage_errors(files, tmp_path, args, message):
    result = CliRunner().invoke(app, ["explain", "--out", str(tmp_path / "o"), "--fasta", str(files["fasta"]),
                                      "--cons", str(files["cons"]), "--model", str(files["model"]), *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "o").exists()



# ---- score-variants --explain-top ----------------------------------------------------------------------
def test_score_variants_explains_its_strongest_variants_across_shards(files, tmp_path):
    """The shard that assembles the output explains the N strongest variants of ALL chunks (the
    other shard's strongest come from its parts)."""
    import pandas as pd

    from tests.helpers import score

    seq = files["seqs"]["chrA"]
    positions = [6_000 + 700 * i for i in range(8)]
    lines = "".join(f"chrA\t{p + 1}\tv{i}\t{seq[p]}\t{'ACGT'[('ACGT'.index(seq[p]) + 2) % 4]}\t.\t.\t.\n"
                    for i, p in enumerate(positions))
    vcf = tmp_path / "v.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n" + lines)
    common = dict(vcf=vcf, fasta=files["fasta"], cons=files["cons"], model=files["model"], out=tmp_path / "s.tsv",
                  device="cpu", chunk_size=2, explain_top=3, explain_dir=str(tmp_path / "top"), explain_flank=3,
                  explain_method="gradient")
    first = score(shard="1/2", **common)
    assert not first.assembled and not (tmp_path / "top").exists()
    second = score(shard="2/2", **common)
    assert second.assembled and second.explained == tmp_path / "top"
    scores = pd.read_csv(tmp_path / "s.tsv", sep="\t")
    strength = scores.assign(a=scores["diff"].abs()).groupby("id")["a"].max().sort_values(ascending=False)
    got = load_contributions(tmp_path / "top" / "contrib.npz")
    assert list(got.table["name"][::2]) == list(strength.index[:3])
    assert set(got.table["allele"]) == {"ref", "alt"} and len(got.sequence(0)) == 7


def test_explain_top_is_checked_before_scoring(files, tmp_path):
    from tests.helpers import score

    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="--explain-top .*file is a file"):
        score(vcf=tmp_path / "none.vcf", fasta=files["fasta"], cons=files["cons"], model=files["model"],
              out=tmp_path / "s.tsv", explain_top=2, explain_dir=str(tmp_path / "file"))
    from epiformer_cli.options import ScoreOptions

    with pytest.raises(UsageError, match="--explain-top takes 1 to 100"):
        ScoreOptions(explain_top=101, explain_dir="x")
    with pytest.raises(UsageError, match="needs a folder"):
        ScoreOptions(explain_top=3)


def test_cli_explain_top_takes_a_count_and_a_folder(files, tmp_path):
    seq = files["seqs"]["chrA"]
    vcf = tmp_path / "v.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
                   f"chrA\t5001\tx\t{seq[5000]}\t{'ACGT'[('ACGT'.index(seq[5000]) + 1) % 4]}\t.\t.\t.\n")
    result = CliRunner().invoke(app, ["score-variants", "--null-size", "0", str(vcf), "--fasta", str(files["fasta"]), "--cons",
                                      str(files["cons"]), "--model", str(files["model"]), "--device", "cpu",
                                      "--out", str(tmp_path / "s.tsv"), "--explain-top", "1", str(tmp_path / "top"),
                                      "--explain-flank", "2", "--explain-method", "gradient"])
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "top" / "regions.tsv").read_text().splitlines()) == 1 + 2 * len(TRACKS)


def test_notebook_api_returns_the_contributions(files, tmp_path):
    import epiformer_cli as epi

    got = epi.explain_regions([("chrA", 3_000, 3_008, "p")], files["fasta"], files["cons"], files["model"], tmp_path / "o",
                      method="gradient", plot=0, tracks="glia")
    assert list(got.table["name"]) == ["p"] and got.tracks == ["glia"]
    assert got.row(0)[0].shape == (1, 4, 8) and got.sequence(0) == files["seqs"]["chrA"][3_000:3_008]


@pytest.mark.parametrize("method, total", [("ism", 3 * (30 + 8)), ("gradient", 2)])
def test_progress_ends_at_its_total(files, tmp_path, method, total):
    """ISM counts mutants (N bases made up at the region's end), gradient counts regions."""
    bed = write_bed(tmp_path / "r.bed", [("chrA", 29_990, 30_020), ("chrA", 3_000, 3_008)])
    calls = []
    explain(files["fasta"], files["cons"], files["model"], tmp_path / "o", regions=bed,
            options=ExplainOptions.of(method=method, device="cpu", plot=0, rc_average=False),
            progress=lambda n, total=None: calls.append((n, total)))
    assert calls[0] == (0, total) and sum(n for n, _ in calls) == total


def test_variant_plots_mark_the_motif_the_variant_overlaps(files, tmp_path):
    """--motif-db: the strongest motif instance overlapping a variant is found as score-variants
    finds it, and drawn as a band on its plots (the PNG changes)."""
    from epiformer_cli.explain.regions import Variant
    from epiformer_cli.io.genome import Genome
    from epiformer_cli.jobs.explain import _motif_scanner, _variant_motif

    seq = files["seqs"]["chrA"]
    snv = 12_000
    site = seq[snv - 4:snv + 6]  # a 10 bp motif that is the reference's own bases here
    meme = tmp_path / "m.meme"
    rows = "".join(" ".join("0.97" if b == base else "0.01" for b in "ACGT") + "\n" for base in site)
    meme.write_text(f"MEME version 4\n\nALPHABET= ACGT\n\nMOTIF here_1 HERE\nletter-probability matrix: alength= 4 "
                    f"w= 10\n{rows}\n")
    alt_base = "ACGT"[("ACGT".index(seq[snv]) + 2) % 4]
    scanner = _motif_scanner(ExplainOptions.of(motif_db=meme))
    region = type("R", (), {"chrom": "chrA", "variant": Variant("rs1", snv + 1, snv, seq[snv], alt_base)})()
    genome = Genome(files["fasta"])
    try:
        start, end, label = _variant_motif(region, genome, scanner)
    finally:
        genome.close()
    assert (start, end) == (snv - 4, snv + 6) and label.startswith("here_1 (HERE) (+) ref ")
    # the reference scores log2(0.97 / 0.25) per base (+ memelite's pseudocount); the alt loses one
    ref_score = 10 * np.log2(0.97 + 1e-4) - 10 * np.log2(0.25)
    alt_score = 9 * np.log2(0.97 + 1e-4) + np.log2(0.01 + 1e-4) - 10 * np.log2(0.25)
    assert label.endswith(f"ref {ref_score:.1f}, alt {alt_score:.1f}")
    vcf = tmp_path / "v.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
                   f"chrA\t{snv + 1}\trs1\t{seq[snv]}\t{alt_base}\t.\t.\t.\n")
    run(files, tmp_path / "plain", vcf=vcf, flank=8, plot=1, method="gradient", tracks=[TRACKS[0]])
    run(files, tmp_path / "marked", vcf=vcf, flank=8, plot=1, method="gradient", tracks=[TRACKS[0]], motif_db=meme)
    name = f"0001.rs1.variant.{TRACKS[0]}.png"
    assert (tmp_path / "marked" / "plots" / name).read_bytes() != (tmp_path / "plain" / "plots" / name).read_bytes()
    # --motif-db is for variants only
    bed = write_bed(tmp_path / "r.bed", [("chrA", 100, 140)])
    with pytest.raises(UsageError, match="--motif-db marks the motif a variant overlaps"):
        run(files, tmp_path / "regions", bed=bed, motif_db=meme)
