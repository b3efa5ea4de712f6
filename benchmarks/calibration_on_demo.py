"""Calibration on the demo: 10,000 random SNVs (seed 1) scored against the demo's null (seed 0).

Random genomic SNVs are what the null is made of, so their ``diff_p`` must be uniform: about 5%
below 0.05, 1% below 0.01, median 0.5. Needs a finished demo folder (``epiformer demo --out DEMO``,
which leaves its null in ``DEMO/null.tsv.gz``):

    python benchmarks/calibration_on_demo.py DEMO OUT_FOLDER
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd

from epiformer_cli.io.genome import Genome
from epiformer_cli.jobs.score_variants import score_variants
from epiformer_cli.options import ScoreOptions
from epiformer_cli.variants.null import draw_null_snvs


def main(demo: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    fasta, cons = demo / "data" / "genome.fa", demo / "data" / "conservation.bw"
    snvs = draw_null_snvs(Genome(fasta), 10_000, seed=1)
    vcf = out / "random.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
                   + "".join(r.line for r in snvs))
    started = time.perf_counter()
    score_variants(vcf, fasta, cons, demo / "run" / "model.pt", out / "random.tsv",
                   options=ScoreOptions.of(device="cpu", force=True, null_path=str(demo / "null.tsv.gz")))
    print(f"scored 10,000 random SNVs in {time.perf_counter() - started:.0f} s (the null reused)")
    rows = pd.read_csv(out / "random.tsv", sep="\t", na_values=["NA"])
    rows = rows[rows["status"] == "ok"]
    for track, group in [*rows.groupby("track"), ("all tracks", rows)]:
        p = group["diff_p"]
        print(f"{track:<16} rows {len(group):>6}  below 0.05: {(p < 0.05).mean():.4f}  below 0.01: "
              f"{(p < 0.01).mean():.4f}  median {p.median():.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
