"""`epiformer motifs`: which transcription factors' motifs drive each track (TF-MoDISco + TOMTOM)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from epiformer_cli.cli.common import FORCE_HELP, TracksOption, handle_errors, progress_bar


def register(app: typer.Typer) -> None:
    app.command("motifs")(run)


@handle_errors
def run(
    contrib: Annotated[List[Path], typer.Option("--contrib", "-c", metavar="DIR",
                                                 help="An explain --out folder; repeat for several (runs of one "
                                                      "model and genome: --contrib a --contrib b).",
                                                 readable=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (created; a killed run resumes there).")],
    tracks: TracksOption = None,
    window: Annotated[int, typer.Option("--window", help="bp at the centre of each explained region given to "
                                                         "TF-MoDISco (shorter regions are zero-padded).")] = 400,
    max_seqlets: Annotated[int, typer.Option("--max-seqlets", help="Seqlets clustered per track and sign at most "
                                                                   "(more: slower, rarer motifs found).")] = 2000,
    motif_db: Annotated[Optional[Path], typer.Option("--motif-db", help="MEME file of motifs to name the patterns "
                                                                        "by (HOCOMOCO, CIS-BP, your own). Default: "
                                                                        "jaspar: JASPAR CORE vertebrates (shipped, "
                                                                        "no download).", readable=False)] = None,
    force: Annotated[bool, typer.Option("--force", help=FORCE_HELP + ": the results of an earlier run in --out; "
                                                        "and discard the parts of a run with other settings.")] = False,
) -> None:
    """Which transcription factors drive each track: TF-MoDISco patterns named by TOMTOM.

    Reads the hypothetical contributions of one or more `epiformer explain` folders (either method;
    explain thousands of regions, e.g. `explain --peaks pred.bw --top 5000`), finds per track the
    recurring patterns that raise (pos) or lower (neg) the prediction with TF-MoDISco (modisco-lite),
    and matches each against a motif database with TOMTOM (memelite).

    Writes into --out: motifs.tsv (one row per pattern: seqlets, consensus, top 3 matches with
    q-values), patterns.meme (the patterns as PWMs, for FIMO, TOMTOM and score-variants --motif-db),
    seqlets.bed (every seqlet in genome coordinates, for IGV), modisco.<track>.h5 (modisco-lite's
    result file) and report.html (logos, matches, and which motif drives which track).
    """
    from epiformer_cli.jobs.motifs import motifs
    from epiformer_cli.options import MotifsOptions

    options = MotifsOptions(tracks=tracks, window=window, max_seqlets=max_seqlets,
                            motif_db=str(motif_db) if motif_db is not None else None, force=force)
    with progress_bar("motifs", unit="tracks") as advance:
        motifs(contrib, out, options=options, progress=advance)
