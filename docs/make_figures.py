"""Make the README's figures and numbers from a finished ``epiformer demo`` run, so that neither is
made or typed by hand.

    python docs/make_figures.py                          # uses ./epiformer-demo, runs the demo if needed
    python docs/make_figures.py --demo /tmp/demo --out docs/

1. When ``--demo DIR`` holds no finished demo, runs ``epiformer demo --out DIR`` (20-40 minutes on
   2 CPU cores) through ``python -m epiformer_cli``.
2. Copies its figures into ``--out`` under stable names (:data:`FIGURES`); the learning curve is
   drawn again from ``run/metrics.tsv`` with the run's ``--loss``, so that it shows the test row
   (``train`` draws its own before the test row exists).
3. Writes ``demo-numbers.json``: the numbers the README quotes, computed from the demo's files with
   the demo's own functions (:mod:`epiformer_cli.jobs.demo`): held-out Pearson (best validation and
   test rows of ``run/metrics.tsv``), the AUROC of max |diff| over tracks for the causal against the
   neutral SNVs, the calibration shares, the explain AUROCs.
4. Replaces the README's block between :data:`START` and :data:`END` with
   :func:`render_numbers` of those numbers (a pure function: ``tests/test_figures.py`` checks that
   README.md holds exactly ``render_numbers(json.load(docs/demo-numbers.json))``).

The README is checked for its markers first: without them the script says so and exits 1, before
running anything.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

START, END = "<!-- demo-numbers:start -->", "<!-- demo-numbers:end -->"
ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
NUMBERS = "demo-numbers.json"
#: docs name -> the demo's file (the explain example: the first plot of ``explain/ism/plots``).
FIGURES = {
    "calibration-qq.png": "calibration/qq.png",
    "calibration-diff-vs-null.png": "calibration/diff_vs_null.png",
    "top-variants.png": "calibration/top_variants.png",
    "learning-curve.png": "run/learning_curve.png",
    "explain-example.png": "explain/ism/plots",
    "pseudobulk-fragment-lengths.png": "pseudobulk/fragment_lengths.png",
    "evaluate-heatmap.png": "evaluate/heatmap.png",
}
#: docs name -> the demo's report screenshot in headless Chromium (its top, 1200 x 1400 px)
REPORTS = {"motifs-report.png": "motifs/report.html", "evaluate-report.png": "evaluate/report.html"}
#: written last by the demo: its presence means every step finished.
#: what the demo writes last (its steps: ... explain, motifs, score-variants)
FINISHED = "scores.tsv"
#: how many of the strongest variants the README describes (the demo prints 10).
TOP = 10


class ScriptError(Exception):
    """A problem the script reports in one line (exit 1)."""


# ---- the demo --------------------------------------------------------------------------------------
def figure_sources(demo: Path) -> Dict[str, Path]:
    """docs name -> the demo's file; ScriptError naming the first one missing."""
    sources = {}
    for name, rel in FIGURES.items():
        path = Path(demo) / rel
        if rel.endswith("plots"):
            plots = sorted(path.glob("*.png")) if path.is_dir() else []
            path = plots[0] if plots else path / "*.png"
        if not path.is_file():
            raise ScriptError(f"{path} is missing: run `epiformer demo --out {demo}` again")
        sources[name] = path
    return sources


def demo_finished(demo: Path) -> bool:
    """Whether ``demo`` holds a demo that ran to its end, with every figure."""
    try:
        figure_sources(demo)
    except ScriptError:
        return False
    return (Path(demo) / FINISHED).is_file() and all((Path(demo) / rel).is_file() for rel in REPORTS.values())


def demo_command(demo: Path) -> List[str]:
    """The command that makes the demo: this interpreter's epiformer."""
    return [sys.executable, "-m", "epiformer_cli", "demo", "--out", str(demo)]


def ensure_demo(demo: Path) -> None:
    """Run the demo into ``demo`` unless it holds a finished one; ScriptError if it fails."""
    if demo_finished(demo):
        return
    print(f"make_figures: no finished demo in {demo}: running {' '.join(demo_command(demo))} "
          "(20-40 minutes on 2 CPU cores)", file=sys.stderr)
    done = subprocess.run(demo_command(demo))
    if done.returncode != 0:
        raise ScriptError(f"epiformer demo exited with {done.returncode}: see its messages above")
    if not demo_finished(demo):
        raise ScriptError(f"epiformer demo finished but {demo} lacks {FINISHED} or a figure")


# ---- figures ---------------------------------------------------------------------------------------
def copy_figures(demo: Path, out: Path) -> List[Path]:
    """Copy the demo's figures into ``out`` under their docs names (each replaced atomically); the
    learning curve is drawn again from ``run/metrics.tsv`` (see the module's docstring)."""
    from epiformer_cli.io.files import atomic_path
    from epiformer_cli.training import metrics_file
    from epiformer_cli.training.plots import plot_learning_curve

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, source in figure_sources(demo).items():
        target = out / name
        if name == "learning-curve.png":
            config = json.loads((Path(demo) / "run" / "config.json").read_text())
            rows = metrics_file.read_rows(Path(demo) / "run" / "metrics.tsv")
            if not plot_learning_curve(rows, target, loss=config.get("training", {}).get("loss")):
                raise ScriptError(f"cannot draw {target}: matplotlib missing, or no validation row in "
                                  f"{Path(demo) / 'run' / 'metrics.tsv'}")
        else:
            with atomic_path(target) as tmp:
                shutil.copyfile(source, tmp)
        written.append(target)
    return written


# ---- numbers ---------------------------------------------------------------------------------------
def training_numbers(demo: Path) -> Dict[str, Any]:
    """Held-out Pearson of log(x+1) from ``run/metrics.tsv``: the best validation row (the one
    the test row names by its step; without a test row, the first highest) and the test row, mean
    and per track; the chromosomes of each split from ``data/demo.json``."""
    from epiformer_cli.training import metrics_file

    demo = Path(demo)
    rows = metrics_file.read_rows(demo / "run" / "metrics.tsv")
    valid = [r for r in rows if r.get("split") == "valid"]
    tests = [r for r in rows if r.get("split") == "test"]
    if not valid:
        raise ScriptError(f"{demo / 'run' / 'metrics.tsv'} has no validation row")
    test = tests[-1] if tests else None
    best = next((r for r in valid if test is not None and r["step"] == test["step"]), None)
    if best is None:
        best = max(valid, key=lambda r: float(r["pearson"]))  # max keeps the first of equals
    tracks = [c[len("pearson_"):] for c in valid[0] if c.startswith("pearson_")]
    split = json.loads((demo / "data" / "demo.json").read_text()).get("split", {})
    config = json.loads((demo / "run" / "config.json").read_text())

    def scores(row, chroms):
        return {"chroms": list(chroms), "step": int(row["step"]), "pearson": float(row["pearson"]),
                "by_track": {t: float(row[f"pearson_{t}"]) for t in tracks}}

    return {"tracks": tracks, "epochs": config.get("training", {}).get("epochs"),
            "seed": config.get("training", {}).get("seed"), "validations": len(valid),
            "valid": scores(best, split.get("valid", [])),
            "test": scores(test, split.get("test", [])) if test is not None else None}


def variant_numbers(demo: Path) -> Dict[str, Any]:
    """The AUROC of max |diff| over tracks, causal against neutral SNVs, the calibration shares
    (:func:`epiformer_cli.jobs.demo.calibration_check`) and what the :data:`TOP` strongest variants
    are, from ``scores.tsv`` and the truth table; the null's size and seed from
    ``scores.tsv.options.json``."""
    import pandas as pd

    from epiformer_cli.jobs.demo import auroc, calibration_check, per_variant

    demo = Path(demo)
    scores = pd.read_csv(demo / "scores.tsv", sep="\t", dtype={"chrom": str}, na_values=["NA"])
    truth = pd.read_csv(demo / "data" / "variants_truth.tsv", sep="\t", dtype={"chrom": str})
    ok = scores[scores["status"] == "ok"]
    merged = per_variant(ok, truth)
    labelled = merged[merged["class"].isin(["causal", "neutral"])]
    causal = (labelled["class"] == "causal").to_numpy()
    top = merged.sort_values("max_abs_diff", ascending=False).head(TOP)
    motifs = Counter(m for m in top["motif"] if isinstance(m, str) and m != ".")
    null = json.loads((demo / "scores.tsv.options.json").read_text()).get("null", {})
    return {
        "auroc": auroc(labelled["max_abs_diff"].to_numpy(), causal),
        "causal": int(causal.sum()), "neutral": int((~causal).sum()),
        "calibration": calibration_check(ok, truth),
        "null": {"size": null.get("size"), "seed": null.get("seed")},
        "top": {"count": int(len(top)), "motif_sites": int(sum(motifs.values())),
                "motifs": dict(sorted(motifs.items(), key=lambda kv: (-kv[1], kv[0])))},
    }


def explain_numbers(demo: Path) -> Dict[str, Any]:
    """Per method, the mean AUROC of |contribution| for the planted motif-site bases against the
    other bases of their element (:func:`epiformer_cli.jobs.demo.site_auroc`), and the elements."""
    from epiformer_cli.explain.outputs import load_contributions
    from epiformer_cli.jobs.demo import pd_read_bed, site_auroc

    demo = Path(demo)
    sites = pd_read_bed(demo / "data" / "motif_hits.bed", ["chrom", "start", "end", "name"])
    result: Dict[str, Any] = {"auroc": {}}
    for method in ("ism", "gradient"):
        contributions = load_contributions(demo / "explain" / method / "contrib.npz")
        result["auroc"][method] = site_auroc(contributions, sites)
        result["elements"] = int(len(contributions.table))
        result["chroms"] = sorted(set(contributions.table["chrom"]))
    return result


def motif_numbers(demo: Path) -> Dict[str, Any]:
    """The planted motifs the demo's ``motifs`` step found (:func:`epiformer_cli.jobs.demo.
    planted_motifs_found`), the ones it did not, and the regions and patterns it read."""
    from epiformer_cli.jobs.demo import PLANTED_FAMILIES, planted_motifs_found

    demo = Path(demo)
    found = planted_motifs_found(demo / "motifs" / "motifs.tsv")
    record = json.loads((demo / "motifs" / "motifs.json").read_text())
    return {"found": found, "missing": [m for m in PLANTED_FAMILIES if m not in found],
            "regions": record["regions"], "patterns": record["patterns"], "database": record["database"]}


def report_screenshots(demo: Path, out: Path) -> List[Path]:
    """:data:`REPORTS`: the top of the demo's reports (``motifs``, ``evaluate``) in headless Chromium."""
    from epiformer_cli.io.files import atomic_path
    from epiformer_cli.motifs.screenshot import screenshot

    written = []
    for name, rel in REPORTS.items():
        target = Path(out) / name
        with atomic_path(target) as tmp:
            if not screenshot(Path(demo) / rel, tmp, width=1200, height=1400):
                raise ScriptError("no Chromium found for the reports' screenshots: install it (Debian: apt-get "
                                  "install chromium) and run again")
        written.append(target)
    return written


def pseudobulk_numbers(demo: Path) -> Dict[str, Any]:
    """The demo's pseudo-bulk step: cells and fragments per cell type (``pseudobulk/qc.tsv``) and the
    agreement of its bigWigs with the demo's own tracks (:func:`epiformer_cli.jobs.demo.pseudobulk_agreement`)."""
    import pandas as pd

    from epiformer_cli.jobs.demo import pseudobulk_agreement

    demo = Path(demo)
    qc = pd.read_csv(demo / "pseudobulk" / "qc.tsv", sep="\t")
    agreement = pseudobulk_agreement(demo / "pseudobulk", demo / "data")
    return {"cells": int(qc["cells"].sum()), "fragments": int(qc["fragments"].sum()),
            "by_track": {row.cell_type: {"cells": int(row.cells), "top1pct_fraction": round(float(row.top1pct_fraction), 4),
                                         "agreement": round(agreement[row.cell_type], 4)}
                         for row in qc.itertuples()}}


def evaluate_numbers(demo: Path) -> Dict[str, Any]:
    """The demo's evaluate step (``evaluate/metrics.tsv``, ``evaluate.json``) and the largest gap between
    its per-track Pearson and train's test row (``run/metrics.tsv``)."""
    import pandas as pd

    from epiformer_cli.training import metrics_file

    demo = Path(demo)
    table = pd.read_csv(demo / "evaluate" / "metrics.tsv", sep="\t", na_values=["NA"], keep_default_na=False)
    record = json.loads((demo / "evaluate" / "evaluate.json").read_text())
    rows = {r["track"]: r for r in table.to_dict("records")}
    tracks = [t for t in rows if t != "mean"]
    test = next((r for r in metrics_file.read_rows(demo / "run" / "metrics.tsv") if r.get("split") == "test"), None)
    gap = (max(abs(float(rows[t]["pearson"]) - float(test[f"pearson_{t}"])) for t in tracks)
           if test is not None else None)
    return {"chroms": record.get("chroms"), "auroc": round(float(rows["mean"]["auroc"]), 4),
            "specificity": round(float(record["specificity"]["overall"]), 4), "train_gap": gap,
            "by_track": {t: {"pearson": round(float(rows[t]["pearson"]), 4),
                             "specificity": round(float(rows[t]["specificity"]), 4)} for t in tracks}}


def collect_numbers(demo: Path) -> Dict[str, Any]:
    """Everything :func:`render_numbers` needs, from the demo's files."""
    return {"training": training_numbers(demo), "variants": variant_numbers(demo),
            "explain": explain_numbers(demo), "motifs": motif_numbers(demo),
            "pseudobulk": pseudobulk_numbers(demo), "evaluate": evaluate_numbers(demo)}


# ---- the README ------------------------------------------------------------------------------------
def _tracks(by_track: Dict[str, float]) -> str:
    return ", ".join(f"{t} {r:.3f}" for t, r in by_track.items())


def _counts(counts: Dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def render_numbers(numbers: Dict[str, Any]) -> str:
    """The README's paragraph of demo numbers (markdown, wrapped at 100 characters): a pure
    function of :func:`collect_numbers`' dict (as read back from ``demo-numbers.json``)."""
    t, v, e = numbers["training"], numbers["variants"], numbers["explain"]
    valid, test = t["valid"], t["test"]
    cal, null, top = v["calibration"], v["null"], v["top"]
    p = numbers.get("pseudobulk")
    text = (f"Measured on the demo (tiny preset, {t['epochs']} epochs, seed {t['seed']}) by "
            f"`python docs/make_figures.py`, which also made the figures of this README from the same run: ")
    if p is not None:
        text += (f"**pseudobulk** made {len(p['by_track'])} tracks from {p['fragments']:,} fragments of {p['cells']:,} "
                 f"cells, whose Pearson of log(x+1) per 128 bp bin with the demo's own bulk tracks (independent "
                 f"draws of one truth) is "
                 + ", ".join(f"{k} {v['agreement']:.2f}" for k, v in p["by_track"].items())
                 + " (share of insertions in the top 1% of bins: "
                 + ", ".join(f"{v['top1pct_fraction']:.2f}" for v in p["by_track"].values()) + "); trained on them, ")
    text += (f"held-out Pearson of log(x+1) per 128 bp bin **{valid['pearson']:.3f}** on the validation "
            f"chromosome{'s' if len(valid['chroms']) > 1 else ''} {','.join(valid['chroms'])} "
            f"({_tracks(valid['by_track'])}; the best of {t['validations']} validations, step {valid['step']:,})")
    if test is not None:
        text += (f" and **{test['pearson']:.3f}** on the test chromosome{'s' if len(test['chroms']) > 1 else ''} "
                 f"{','.join(test['chroms'])} ({_tracks(test['by_track'])})")
    text += (f"; **AUROC of max |diff| over tracks, {v['causal']} motif-breaking (causal) against {v['neutral']} "
             f"neutral SNVs: {v['auroc']:.3f}**. {top['motif_sites']} of the {top['count']} variants with the "
             f"largest max |diff| break a planted motif site in the truth table")
    if top["motifs"]:
        text += f" ({_counts(top['motifs'])})"
    text += (f"; the rules are in `epiformer-demo/data/RULES.md`. Calibration against a genome-wide null of "
             f"{null['size']:,} random SNVs (seed {null['seed']}): the neutral SNVs have `diff_p < 0.05` in "
             f"**{cal['neutral_below_0.05']:.1%}** of their {cal['neutral_rows']:,} track rows (random sites: 5%), "
             f"and the motif-breaking SNVs a **median `diff_p` of {cal['causal_median_p']:.2g}** in their "
             f"{cal['causal_rows']:,} rows of the tracks their broken motif drives. **explain: mean AUROC of "
             f"|contribution| for the planted motif-site bases against the other bases of their element, {e['elements']} "
             f"{','.join(e['chroms'])} elements: ISM {e['auroc']['ism']:.3f}, gradient "
             f"{e['auroc']['gradient']:.3f}.**")
    ev = numbers.get("evaluate")
    if ev is not None:
        text += (f" **evaluate** on {','.join(ev['chroms'] or [])}: per-track Pearson "
                 + ", ".join(f"{k} {v['pearson']:.3f}" for k, v in ev["by_track"].items())
                 + (f" (train's test Pearson within {ev['train_gap']:.0e})" if ev["train_gap"] is not None else "")
                 + f", peak-vs-background AUROC {ev['auroc']:.3f}, cell-type specificity {ev['specificity']:.2f} ("
                 + ", ".join(f"{k} {v['specificity']:.2f}" for k, v in ev["by_track"].items()) + ").")
    m = numbers.get("motifs")
    if m is not None:
        found = "; ".join(f"{planted} as `{hit['match']}` (q {hit['qvalue']:.1e}, {hit['track']})"
                          for planted, hit in m["found"].items())
        text += (f" **motifs: TF-MoDISco + TOMTOM over {m['regions']} explained elements found "
                 f"{len(m['found'])} of the {len(m['found']) + len(m['missing'])} planted motifs**"
                 f"{': ' + found if found else ''}"
                 f"{'; not found: ' + ', '.join(m['missing']) if m['missing'] else ''} ({m['patterns']} patterns, "
                 f"{m['database']}).")
    text += (" The same seed gives the same numbers on the same CPU, and slightly different ones where the matrix "
             "kernels round differently.")
    return wrap(text)


#: a line starting so would be a heading, quote, list or table row, not the paragraph's text
_BLOCK_START = re.compile(r"^(#{1,6}(\s|$)|>|[-+*](\s|$)|\d{1,9}[.)](\s|$))")


def wrap(text: str, width: int = 100) -> str:
    """``text`` wrapped at ``width`` as one markdown paragraph: never inside a `code span`, and
    never so that a line starts like a markdown block (it then stays on the line before)."""
    keep = "\x00"  # stands for the spaces of code spans while wrapping
    parts = text.split("`")
    text = "`".join(part.replace(" ", keep) if i % 2 else part for i, part in enumerate(parts))
    lines: List[str] = []
    for line in textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False):
        if lines and _BLOCK_START.match(line):
            lines[-1] += " " + line
        else:
            lines.append(line)
    return "\n".join(lines).replace(keep, " ")


def replace_block(text: str, block: str, where: Path = README) -> str:
    """``text`` with what lies between the markers replaced by ``block``; ScriptError without them."""
    if START not in text or END not in text or text.index(START) > text.index(END):
        raise ScriptError(f"{where} lacks the markers {START} and {END} (in that order): add them around the "
                          "paragraph of demo numbers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{block}\n{END}{tail}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, default=Path("epiformer-demo"),
                        help="the demo's folder; the demo runs into it unless it holds a finished one "
                             "(default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DOCS, help="where the figures and demo-numbers.json go "
                                                               "(default: the repository's docs/)")
    parser.add_argument("--readme", type=Path, default=README, help="the README to update (default: the "
                                                                    "repository's README.md)")
    args = parser.parse_args(argv)
    from epiformer_cli.io.files import atomic_write_text

    try:
        readme = args.readme.read_text(encoding="utf-8")
        replace_block(readme, "", args.readme)  # the markers before 30 minutes of demo
        ensure_demo(args.demo)
        figures = copy_figures(args.demo, args.out) + report_screenshots(args.demo, args.out)
        numbers = collect_numbers(args.demo)
        atomic_write_text(args.out / NUMBERS, json.dumps(numbers, indent=1) + "\n")
        # read back, so the README says exactly what the JSON holds
        block = render_numbers(json.loads((args.out / NUMBERS).read_text()))
        atomic_write_text(args.readme, replace_block(readme, block, args.readme))
    except (ScriptError, OSError) as exc:
        print(f"make_figures: error: {exc}", file=sys.stderr)
        return 1
    print(f"make_figures: wrote {', '.join(str(p) for p in figures)}, {args.out / NUMBERS} and the demo "
          f"numbers of {args.readme}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
