"""``demo``: the whole pipeline on the synthetic genome that ships with the tool.

generate (a genome, its single-cell ATAC fragments) -> pseudobulk -> prepare -> train (tiny preset)
-> evaluate -> predict -> export targets -> explain -> motifs -> score variants, each step the same
core function its subcommand calls, so the demo is also an end-to-end check of an install. The
genome's rules are known (OUT/data/RULES.md), so the summary can say how well the model learned
them: held-out Pearson per track and cell-type specificity, how well |alt - ref| separates the
motif-breaking (causal) variants from the neutral ones (AUROC), and how well the contributions of
``explain`` single out the planted motif sites inside their elements (AUROC, both methods).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from epiformer_cli.options import DEFAULT_NULL_SIZE
from epiformer_cli.progress import Progress
from epiformer_cli.runs import check_output_dir

log = logging.getLogger(__name__)

#: elements of the test chromosome explained by both methods (the first ones holding a motif site)
DEMO_EXPLAIN_ELEMENTS = 12
#: seqlets clustered per track and sign by the demo's motifs step (the command's default is 2,000:
#: 1,000 finds every planted motif here in about half the time)
DEMO_MAX_SEQLETS = 1000
#: the planted motifs (RULES.md) and the name prefixes of their JASPAR families: TOMTOM's best match
#: of a learned motif may be a paralog with the same binding site (SPIB for SPI1, FOSL2::JUN for FOS::JUN)
PLANTED_FAMILIES = {"GATA1": ("GATA", "TRPS1"), "SPI1": ("SPI",), "FOS::JUN": ("FOS", "JUN", "BATF", "ATF", "JDP"),
                    "CTCF": ("CTCF",), "CEBPB": ("CEBP",)}

#: Training settings of the demo: the tiny preset reaches a held-out Pearson above 0.7 on the demo
#: genome in a few minutes on 2 CPU cores (see benchmarks/README.md for the measured curve).
DEMO_EPOCHS = 10
DEMO_STEP_BP = 4096
DEMO_LR = 2e-3
DEMO_BATCH = 8


@dataclass
class DemoSummary:
    """What the demo produced and found."""

    out_dir: Path
    lines: List[str] = field(default_factory=list)
    valid_pearson: Optional[float] = None
    test_pearson: Optional[float] = None
    auroc: Optional[float] = None
    explain_auroc: Dict[str, float] = field(default_factory=dict)
    calibration: Dict[str, float] = field(default_factory=dict)
    top_variants: List[Dict[str, Any]] = field(default_factory=list)
    #: evaluate's numbers on the test chromosome: track (and "mean") -> metric -> value
    evaluation: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    #: planted motif -> (pattern, database match, q-value) of the pattern that found it
    motifs_found: Dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        return "\n".join(self.lines)


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the boolean labels ``positive`` (ties count 1/2).

    Computed as the Mann-Whitney U statistic over average ranks.
    """
    import pandas as pd

    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


#: what a demo writes into its folder (glob patterns), and the temporaries of its steps.
DEMO_FILES = ("data", "pseudobulk", "store", "evaluate", "run", "predictions", "scores.tsv", "scores.tsv.*", "null.tsv.gz",
              "null.tsv.gz.*", "calibration", "explain",
              "motifs", ".numba-cache", ".store.partial", ".store.*")


def _evaluate_step(data, model_path: Path, out_dir: Path, trained, device: str, summary: "DemoSummary") -> None:
    """evaluate the trained model on the store's test chromosome, and check it says what train said."""
    from epiformer_cli.jobs.evaluate import evaluate_model
    from epiformer_cli.options import EvaluateOptions

    log.info("demo 5/9: evaluate the model on the test chromosome %s (report, heatmap)", ",".join(data.test_chroms))
    evaluated = evaluate_model(model_path, out_dir / "evaluate", data=out_dir / "store",
                               options=EvaluateOptions.of(device=device, force=True))
    rows = {r["track"]: r for r in evaluated.rows()}
    test = next((r for r in trained.rows if r["split"] == "test"), None)
    agreement = ""
    if test is not None:
        gap = max(abs(float(rows[t]["pearson"]) - float(test[f"pearson_{t}"])) for t in evaluated.tracks)
        agreement = f"; train's test Pearson per track agrees to {gap:.1e}"
    summary.evaluation = {t: {k: rows[t][k] for k in ("pearson", "spearman", "auroc", "specificity")}
                          for t in [*evaluated.tracks, "mean"]}
    summary.evaluation["mean"]["overall_specificity"] = evaluated.scores.specificity
    per_track = ", ".join(f"{t} r {float(rows[t]['pearson']):.3f} / specificity {float(rows[t]['specificity']):.2f}"
                          for t in evaluated.tracks)
    say = summary.lines.append
    say(f"evaluate ({','.join(data.test_chroms)}): {per_track}; peak vs background AUROC "
        f"{float(rows['mean']['auroc']):.3f}, cell-type specificity {evaluated.scores.specificity:.2f}{agreement}; "
        f"report {out_dir / 'evaluate' / 'report.html'}")


def pseudobulk_agreement(pseudobulk_dir: Path, data_dir: Path) -> Dict[str, float]:
    """Per cell type, the Pearson r of log(x + 1) per 128 bp bin between the pseudo-bulk bigWig of
    ``pseudobulk_dir`` (insertions summed per bin) and the demo's own bulk track of ``data_dir``
    (mean coverage per bin), over the whole genome: two independent noisy draws of one expected
    accessibility."""
    import json

    from epiformer_cli.io.bigwig import BigWig, bin_values
    from epiformer_cli.names import file_part

    manifest = json.loads((Path(data_dir) / "demo.json").read_text())
    out: Dict[str, float] = {}
    for track in manifest["tracks"]:
        xs, ys = [], []
        with BigWig(Path(pseudobulk_dir) / f"{file_part(track)}.bw") as a, \
                BigWig(Path(data_dir) / manifest["targets"][track]) as b:
            for chrom, size in manifest["chrom_sizes"].items():
                end = size // 128 * 128
                xs.append(bin_values(a.values(chrom, 0, end), 128, "sum"))
                ys.append(bin_values(b.values(chrom, 0, end), 128, "mean"))
        out[track] = float(np.corrcoef(np.log1p(np.concatenate(xs)), np.log1p(np.concatenate(ys)))[0, 1])
    return out


def run_demo(
    *,
    out_dir: Path,
    seed: int = 0,
    data_only: bool = False,
    epochs: int = DEMO_EPOCHS,
    device: str = "auto",
    progress: Optional[Progress] = None,
    train_progress: Optional[Progress] = None,
) -> DemoSummary:
    """Run the demo into ``out_dir`` (every step is redone from scratch).

    Layout: ``data/`` (the synthetic genome, tracks, variants, RULES.md), ``store/`` (prepare),
    ``run/`` (train: model.pt, metrics.tsv, learning_curve.png), ``predictions/`` (one bigWig
    of predictions and one of training targets per track), ``scores.tsv`` (score-variants),
    ``explain/ism`` and ``explain/gradient`` (explain, with a plot of the first element).

    Args:
        out_dir: folder for everything the demo writes.
        seed: seed of the synthetic genome and of training.
        data_only: stop after writing the synthetic genome, tracks and variants.
        epochs: training epochs of the tiny model.
        device: compute device for training, prediction and scoring.
        progress: ``progress(n, total=...)`` for the data, prediction and scoring steps.
        train_progress: the training step's progress, in optimizer steps (see ``train_model``).
    """
    import pandas as pd

    from epiformer_cli.demo import generate_demo

    out_dir = Path(out_dir)
    # every step is redone with --force, so the folder must be the demo's: new, empty, or holding
    # only what a demo writes (a demo's --force must never replace a run or store of the user's)
    check_output_dir(out_dir, marks=(), ours=DEMO_FILES)
    from epiformer_cli.motifs import use_numba_cache

    # the motifs step's compiled kernels stay in the demo's folder: a demo writes nowhere else
    use_numba_cache(out_dir / ".numba-cache")
    summary = DemoSummary(out_dir)
    say = summary.lines.append

    log.info("demo 1/9: writing the synthetic genome into %s", out_dir / "data")
    data = generate_demo(out_dir / "data", seed=seed)
    sizes = ", ".join(f"{c} {n / 1e6:.2f} Mb" for c, n in data.chrom_sizes.items())
    say(f"demo genome: {sizes}; tracks {', '.join(data.tracks)}; rules in {data.rules}")
    if data_only:
        for label, path in (("genome", data.fasta), ("conservation", data.conservation),
                            ("targets sheet", data.targets_sheet), ("blacklist", data.blacklist),
                            ("variants", data.vcf), ("truth", data.truth)):
            say(f"  {label:<13} {path}")
        return summary

    from epiformer_cli.jobs.prepare import prepare_store
    from epiformer_cli.jobs.train import TrainOptions, train_model
    from epiformer_cli.model.config import preset
    from epiformer_cli.options import PrepareOptions

    from epiformer_cli.jobs.pseudobulk import pseudobulk
    from epiformer_cli.options import PseudobulkOptions

    log.info("demo 2/9: pseudo-bulk tracks per cell type from the single-cell fragments (%s)", data.fragments)
    bulk = pseudobulk([data.fragments], data.cell_types, data.fasta, out_dir / "pseudobulk",
                      options=PseudobulkOptions(force=True))
    agreement = ", ".join(f"{t} {r:.2f}" for t, r in pseudobulk_agreement(out_dir / "pseudobulk", data.out_dir).items())
    say(f"pseudobulk: {len(bulk.types)} cell types from {bulk.in_cells:,} fragments of "
        f"{sum(q.cells for q in bulk.qc):,} cells into {out_dir / 'pseudobulk'}; Pearson of log(x+1) per 128 bp "
        f"bin with the demo's bulk tracks (independent draws of one truth): {agreement}")

    cfg = preset("tiny")
    log.info("demo 3/9: prepare the pseudo-bulk tracks (valid %s, test %s)", ",".join(data.valid_chroms),
             ",".join(data.test_chroms))
    prepared = prepare_store(
        data.fasta, data.conservation, out_dir / "pseudobulk" / "targets.tsv", out_dir / "store",
        blacklist=data.blacklist,
        options=PrepareOptions(window_bp=cfg.seq_len, step_bp=DEMO_STEP_BP, valid_chroms=data.valid_chroms,
                               test_chroms=data.test_chroms, force=True),
    )
    say(f"prepare: {prepared.describe()}")

    log.info("demo 4/9: train the tiny preset for %d epochs", epochs)
    options = TrainOptions(epochs=epochs, batch_size=DEMO_BATCH, lr=DEMO_LR, seed=seed, device=device)
    trained = train_model(data=out_dir / "store", out=out_dir / "run", preset="tiny", options=options, force=True,
                          command=f"epiformer demo --seed {seed}", progress=train_progress)
    model_path = out_dir / "run" / "model.pt"
    summary.valid_pearson = trained.best_pearson
    summary.test_pearson = trained.test.get("pearson") if trained.test else None
    valid_rows = [r for r in trained.rows if r["split"] == "valid"]
    best = next((r for r in valid_rows if int(r["step"]) == trained.best_step), {})
    per_track = ", ".join(f"{t} {float(best[f'pearson_{t}']):.3f}" for t in data.tracks if f"pearson_{t}" in best)
    say(f"train: held-out Pearson of log(x+1) per 128 bp bin: valid ({','.join(data.valid_chroms)}) "
        f"{trained.best_pearson:.3f} [{per_track}]"
        + (f", test ({','.join(data.test_chroms)}) {summary.test_pearson:.3f}" if summary.test_pearson is not None else "")
        + f"; model {model_path}")

    _evaluate_step(data, model_path, out_dir, trained, device, summary)

    from epiformer_cli.jobs.export import export_targets
    from epiformer_cli.jobs.predict import predict_genome
    from epiformer_cli.options import PredictOptions, ScoreOptions

    log.info("demo 6/9: predict the whole demo genome and export the targets beside it")
    (out_dir / "predictions").mkdir(exist_ok=True)
    predicted = predict_genome(data.fasta, data.conservation, model_path, out_dir / "predictions" / "pred.bw",
                               options=PredictOptions.of(device=device, force=True), progress=progress)
    export_targets(out_dir / "store", out_dir / "predictions" / "targets.bw")
    say(f"predict: {', '.join(str(p) for p in predicted.outputs.values())} "
        f"(and targets.<track>.bw beside them for IGV)")

    log.info("demo 7/9: explain %d elements of %s by ISM and by gradient", DEMO_EXPLAIN_ELEMENTS,
             ",".join(data.test_chroms))
    _explain_step(data, model_path, out_dir / "explain", device, summary)

    log.info("demo 8/9: find the motifs of the %s elements (explain by gradient, TF-MoDISco, TOMTOM)",
             ",".join(data.test_chroms))
    _motifs_step(data, model_path, out_dir, device, summary)

    from epiformer_cli.jobs.score_variants import score_variants

    log.info("demo 9/9: score every variant of %s, with the motif each one overlaps", data.vcf)
    scores_path = out_dir / "scores.tsv"
    scored = score_variants(data.vcf, data.fasta, data.conservation, model_path, scores_path,
                            options=ScoreOptions.of(device=device, force=True, plots=str(out_dir / "calibration"),
                                                   motif_db=str(out_dir / "motifs"),
                                                   # the demo's own null, beside its results (not in the
                                                   # user's cache: the demo's genome is made afresh each time)
                                                   null_path=str(out_dir / "null.tsv.gz")))
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(scored.statuses.items()))
    say(f"score-variants: {scores_path} ({statuses}); null {out_dir / 'null.tsv.gz'}; plots in "
        f"{out_dir / 'calibration'}")

    scores = pd.read_csv(scores_path, sep="\t", dtype={"chrom": str}, na_values=["NA"])
    truth = pd.read_csv(data.truth, sep="\t", dtype={"chrom": str})
    ok = scores[scores["status"] == "ok"]
    merged = per_variant(ok, truth)
    labelled = merged[merged["class"].isin(["causal", "neutral"])]
    summary.auroc = auroc(labelled["max_abs_diff"].to_numpy(), (labelled["class"] == "causal").to_numpy())
    say(f"variants: AUROC of max |alt - ref| over tracks, causal ({int((labelled['class'] == 'causal').sum())}) "
        f"vs neutral ({int((labelled['class'] == 'neutral').sum())}) SNVs: {summary.auroc:.3f}")
    summary.calibration = calibration_check(ok, truth)
    say(f"calibration against a genome-wide null of {DEFAULT_NULL_SIZE:,} SNVs: neutral SNVs (far from every "
        f"element) have diff_p < 0.05 in {summary.calibration['neutral_below_0.05']:.1%} of track rows (random "
        f"sites: 5%); motif-breaking SNVs have median diff_p {summary.calibration['causal_median_p']:.2g} on the "
        f"tracks their motif drives")
    top = merged.sort_values("max_abs_diff", ascending=False).head(10)
    summary.top_variants = top.to_dict("records")
    say("top variants by max |alt - ref| (sum over 5 bins of 128 bp around the variant):")
    say(f"  {'chrom':<6} {'pos':>9}  {'ref>alt':<14} {'|diff|':>8}  {'truth':<18} motif found (log-odds ref > alt)")
    for row in summary.top_variants:
        truth_text = row["class"] if isinstance(row["class"], str) else "?"
        if isinstance(row.get("motif"), str) and row["motif"] != ".":
            truth_text += f" ({row['motif']})"
        found = row.get("found_motif")
        found_text = "-"
        if isinstance(found, str) and found not in (".", ""):
            found_text = f"{found} ({row['motif_ref_score']:.1f} > {row['motif_alt_score']:.1f})"
        change = f"{row['ref']}>{row['alt']}"
        change = change if len(change) <= 14 else change[:12] + ".."
        say(f"  {row['chrom']:<6} {int(row['pos']):>9}  {change:<14} {row['max_abs_diff']:>8.2f}  {truth_text:<18} "
            f"{found_text}")

    return summary


def per_variant(ok, truth):
    """One row per scored allele (chrom, pos, ref, alt) with its max |diff| over tracks, its id,
    and the truth table's class and motif (NaN where the truth has no row): what the AUROC and the
    list of top variants rank; with score-variants' motif columns, the motif it overlaps
    (``found_motif``) and its log-odds scores. ``ok``: the ``ok`` rows of ``scores.tsv``."""
    scanned = {"found_motif": ("motif", "first"), "motif_ref_score": ("motif_ref_score", "first"),
               "motif_alt_score": ("motif_alt_score", "first")} if "motif" in ok.columns else {}
    table = (ok.assign(abs_diff=ok["diff"].abs())
             .groupby(["chrom", "pos", "ref", "alt"], as_index=False)
             .agg(max_abs_diff=("abs_diff", "max"), id=("id", "first"), **scanned))
    return table.merge(truth[["chrom", "pos", "ref", "alt", "class", "motif"]], on=["chrom", "pos", "ref", "alt"],
                       how="left")


def calibration_check(ok, truth) -> Dict[str, float]:
    """What the demo measures of the calibration, from the ``ok`` rows of its scores and the truth:

    * ``neutral_below_0.05``: the fraction of (neutral SNV, track) rows with ``diff_p < 0.05``;
    * ``causal_median_p``: the median ``diff_p`` of causal SNVs on the tracks the truth says their
      broken motif drives.
    """
    rows = ok.merge(truth[["chrom", "pos", "ref", "alt", "class", "tracks"]], on=["chrom", "pos", "ref", "alt"])
    neutral = rows[rows["class"] == "neutral"]
    driven = np.array([track in str(tracks).split(",") for track, tracks in zip(rows["track"], rows["tracks"])],
                      dtype=bool)
    causal = rows[(rows["class"] == "causal").to_numpy() & driven]
    return {"neutral_below_0.05": float((neutral["diff_p"] < 0.05).mean()),
            "causal_median_p": float(causal["diff_p"].median()),
            "neutral_rows": int(len(neutral)), "causal_rows": int(len(causal))}


def _explain_step(data, model_path: Path, folder: Path, device: str, summary: DemoSummary) -> None:
    """Explain the first test-chromosome elements holding a planted motif site by both methods,
    and measure how well |contribution| singles out the site bases (:func:`site_auroc`)."""
    from epiformer_cli.explain.outputs import load_contributions
    from epiformer_cli.jobs.explain import explain
    from epiformer_cli.options import ExplainOptions

    elements = pd_read_bed(data.elements, ["chrom", "start", "end", "name"])
    sites = pd_read_bed(data.motif_hits, ["chrom", "start", "end", "name"])
    chosen = []
    for row in elements.itertuples():
        if row.chrom in data.test_chroms and row.name != "decoy" and _has_site(sites, row):
            chosen.append(row)
        if len(chosen) == DEMO_EXPLAIN_ELEMENTS:
            break
    folder.mkdir(parents=True, exist_ok=True)
    bed = folder / "elements.bed"
    bed.write_text("".join(f"{r.chrom}\t{r.start}\t{r.end}\t{r.name}_{i + 1}\n" for i, r in enumerate(chosen)))
    parts = []
    for method in ("ism", "gradient"):
        explain(data.fasta, data.conservation, model_path, folder / method, regions=bed,
                options=ExplainOptions.of(method=method, device=device, plot=1, force=True))
        summary.explain_auroc[method] = site_auroc(load_contributions(folder / method / "contrib.npz"), sites)
        parts.append(f"{method} {summary.explain_auroc[method]:.3f}")
    plot = next(iter(sorted((folder / "ism" / "plots").glob("*.png"))), None)
    summary.lines.append(
        f"explain: mean AUROC of |contribution| (max over tracks) for planted motif-site bases vs the other bases of "
        f"their element, over {len(chosen)} {','.join(data.test_chroms)} elements: {', '.join(parts)}; "
        f"files in {folder}" + (f", e.g. {plot}" if plot else ""))


def _motifs_step(data, model_path: Path, out_dir: Path, device: str, summary: DemoSummary) -> None:
    """Explain every element of the test chromosome by gradient, run ``motifs`` on it, and say which
    planted motifs were found (a positive pattern whose top-3 TOMTOM matches name the motif's
    family at q <= 0.05) and under which JASPAR name."""
    from epiformer_cli.jobs.explain import explain
    from epiformer_cli.jobs.motifs import motifs
    from epiformer_cli.options import ExplainOptions, MotifsOptions

    elements = pd_read_bed(data.elements, ["chrom", "start", "end", "name"])
    chosen = elements[elements["chrom"].isin(data.test_chroms) & (elements["name"] != "decoy")]
    folder = out_dir / "explain" / "elements"
    folder.mkdir(parents=True, exist_ok=True)
    bed = out_dir / "explain" / "elements.all.bed"
    bed.write_text("".join(f"{r.chrom}\t{r.start}\t{r.end}\t{r.name}_{i + 1}\n"
                           for i, r in enumerate(chosen.itertuples())))
    explain(data.fasta, data.conservation, model_path, folder, regions=bed,
            options=ExplainOptions.of(method="gradient", device=device, plot=0, force=True))
    found = motifs([folder], out_dir / "motifs", options=MotifsOptions(max_seqlets=DEMO_MAX_SEQLETS, force=True))
    summary.motifs_found = planted_motifs_found(out_dir / "motifs" / "motifs.tsv")
    parts = [f"{planted} as {hit['match']} ({hit['pattern']}, q {hit['qvalue']:.1e})"
             for planted, hit in summary.motifs_found.items()]
    missing = [planted for planted in PLANTED_FAMILIES if planted not in summary.motifs_found]
    summary.lines.append(
        f"motifs: TF-MoDISco + TOMTOM (JASPAR) over {found.regions} {','.join(data.test_chroms)} elements found "
        f"{len(parts)} of the {len(PLANTED_FAMILIES)} planted motifs: {'; '.join(parts) or 'none'}"
        + (f"; not found: {', '.join(missing)}" if missing else "")
        + f"; report {out_dir / 'motifs' / 'report.html'}")


def planted_motifs_found(motifs_tsv: Path) -> Dict[str, Dict[str, Any]]:
    """Which planted motifs a ``motifs`` run found: per planted motif (in :data:`PLANTED_FAMILIES`
    order), among the positive patterns whose top-3 matches name the motif's family at q <= 0.05,
    the match naming the motif itself if there is one (SPI1 over its paralog SPIC), else the best
    q-value: ``{"pattern", "match" (ID (NAME)), "qvalue", "track"}``."""
    import pandas as pd

    table = pd.read_csv(motifs_tsv, sep="\t", na_values=["NA"], keep_default_na=False)
    found: Dict[str, Dict[str, Any]] = {}
    for planted, prefixes in PLANTED_FAMILIES.items():
        best = None
        for row in table[table["sign"] == "pos"].itertuples():
            for k in (1, 2, 3):
                label, q = getattr(row, f"match_{k}"), getattr(row, f"q_{k}")
                name = label.rsplit(" (", 1)[-1].rstrip(")") if label.endswith(")") else label
                if label != "." and q <= 0.05 and name.upper().startswith(prefixes):
                    rank = (name.upper() != planted, float(q))
                    if best is None or rank < best[0]:
                        best = (rank, {"pattern": row.pattern, "match": label, "qvalue": float(q), "track": row.track})
        if best is not None:
            found[planted] = best[1]
    return found


def pd_read_bed(path: Path, names):
    import pandas as pd

    return pd.read_csv(path, sep="\t", header=None, usecols=range(len(names)), names=names,
                       dtype={"chrom": str}, comment="#")


def _has_site(sites, element) -> bool:
    on = sites[(sites["chrom"] == element.chrom) & (sites["start"] >= element.start) & (sites["end"] <= element.end)]
    return len(on) > 0


def site_auroc(contributions, sites) -> float:
    """Mean over explained regions of the AUROC of |contribution| (max over tracks) for bases
    inside a motif hit vs the region's other bases (regions with both kinds of base only)."""
    values = []
    for i, row in contributions.table.iterrows():
        start, end = int(row["start"]), int(row["end"])
        on = sites[(sites["chrom"] == row["chrom"]) & (sites["end"] > start) & (sites["start"] < end)]
        label = np.zeros(end - start, dtype=bool)
        for s, e in zip(on["start"], on["end"]):
            label[max(0, s - start):min(end, e) - start] = True
        score = np.nanmax(np.abs(contributions.row(i)[1]), axis=0)
        keep = np.isfinite(score)
        if label[keep].any() and (~label[keep]).any():
            values.append(auroc(score[keep], label[keep]))
    return float(np.mean(values)) if values else float("nan")
