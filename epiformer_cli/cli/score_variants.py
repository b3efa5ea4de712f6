"""`epiformer score-variants`: Score the effect of every VCF variant on predicted accessibility."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional, Tuple

import typer

from epiformer_cli.cli.common import (
    FORCE_HELP, DeviceOption, FastaOption, ModelConsOption, ModelOption, PrecisionOption, ThreadsOption, TracksOption,
    apply_threads, handle_errors, require,
)
from epiformer_cli.options import DEFAULT_MAX_NULL_MINUTES, DEFAULT_NULL_PER_WINDOW, DEFAULT_NULL_SIZE


def register(app: typer.Typer) -> None:
    app.command("score-variants")(run)


@handle_errors
def run(
    vcf: Annotated[str, typer.Argument(help="VCF (plain, bgzip or gzip), BCF, or - for standard input (sorted or not).")],
    fasta: FastaOption = None,
    cons: ModelConsOption = None,
    model: ModelOption = None,
    out: Annotated[str, typer.Option("--out", "-o", help="Output file, or - for standard output. Its name picks "
                                                         "the format: .gz is bgzipped, .vcf.gz also tabix-indexed "
                                                         "when sorted, .bcf is BCF.")] = "-",
    out_format: Annotated[Optional[str], typer.Option(
        "--format", help="tsv (one row per variant x track) or vcf (input records with INFO fields per track) "
                         "[default: from --out: .vcf, .vcf.gz, .bcf are vcf, anything else tsv].",
        show_default=False)] = None,
    tracks: TracksOption = None,
    score_bins: Annotated[int, typer.Option("--score-bins", help="128 bp bins summed for ref/alt, centred on "
                                                                  "the variant.")] = 5,
    rc_average: Annotated[bool, typer.Option("--rc-average/--no-rc-average",
                                             help="Average with the reverse-complement strand.")] = True,
    window_mode: Annotated[str, typer.Option("--window-mode", help="grid (shared genome-wide windows, fast) or "
                                                                   "centered (variant at the window centre).")] = "grid",
    on_ref_mismatch: Annotated[str, typer.Option("--on-ref-mismatch", help="skip (status ref_mismatch), error, or "
                                                                           "use-vcf-ref.")] = "skip",
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Windows per model call for "
                                                                            "indels (default: by device).")] = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = "fp32",
    threads: ThreadsOption = None,
    shard: Annotated[Optional[str], typer.Option("--shard", help="I/N: score every N-th chunk starting at I "
                                                               "(1-based); needs --out FILE; the last shard to "
                                                               "finish writes it. Default: SLURM_ARRAY_TASK_ID/"
                                                               "SLURM_ARRAY_TASK_COUNT when set.")] = None,
    chunk_size: Annotated[int, typer.Option("--chunk-size", help="VCF records per chunk (memory, resume "
                                                                 "and shard unit).")] = 5000,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 at the first allele that cannot be scored "
                                                          "(any status but ok) instead of writing its status.")] = False,
    no_cons: Annotated[bool, typer.Option("--no-cons", help="Score with a model trained with conservation on "
                                                            "all-zero conservation (warned).")] = False,
    force: Annotated[bool, typer.Option("--force", help=FORCE_HELP + ": the --out file, a --null made for other "
                                                        "settings, the --plots and the --explain-top results; and "
                                                        "discard the parts of a run with other settings.")] = False,
    explain_top: Annotated[Optional[Tuple[int, Path]], typer.Option(
        "--explain-top", metavar="N DIR", help="Then explain the N strongest variants (max |diff| over tracks, "
                                                "N <= 100) into folder DIR, as `epiformer explain --variants` "
                                                "does.")] = None,
    explain_method: Annotated[str, typer.Option("--explain-method", help="ism or gradient, for --explain-top.")] = "ism",
    explain_flank: Annotated[int, typer.Option("--explain-flank", help="Bases explained each side of a variant, "
                                                                       "for --explain-top.")] = 200,
    null_size: Annotated[int, typer.Option("--null-size", help="Random genomic SNVs scored as a null for the "
                                                               "calibrated columns (diff_p, log2fc_p, max_abs_p, "
                                                               "ref_quantile, alt_quantile); 0 turns calibration "
                                                               "off.")] = DEFAULT_NULL_SIZE,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the null's positions and ALT bases.")] = 0,
    null_per_window: Annotated[int, typer.Option("--null-per-window", help="Null SNVs drawn per grid window: "
                                                                          "they share its reference pass (10: "
                                                                          "about a fifth of the cost of 1, each "
                                                                          "SNV in a window of its own).")
                               ] = DEFAULT_NULL_PER_WINDOW,
    max_null_minutes: Annotated[float, typer.Option("--max-null-minutes", help="Refuse a null estimated (from "
                                                                               "its first windows) to take "
                                                                               "longer; 0: no limit.")
                                ] = DEFAULT_MAX_NULL_MINUTES,
    null: Annotated[Optional[Path], typer.Option("--null", help="Null file: reused when it was made for the same "
                                                                "model, genome, conservation and scoring options "
                                                                "(otherwise refused, naming what differs, or "
                                                                "replaced with --force), written "
                                                                "when absent. Default: the null cache "
                                                                "($EPIFORMER_CACHE_DIR/nulls, see `epiformer "
                                                                "cache list`), shared by every run.")] = None,
    null_blacklist: Annotated[Optional[Path], typer.Option("--null-blacklist", help="BED (plain, gzip or bgzip) of "
                                                                                     "regions the null draws no SNV "
                                                                                     "from.")] = None,
    plots: Annotated[Optional[Path], typer.Option("--plots", help="Folder for the calibration plots: qq.png, "
                                                                  "diff_vs_null.png, top_variants.png.")] = None,
    motif_db: Annotated[Optional[Path], typer.Option("--motif-db", help="MEME file, a motifs --out folder, or "
                                                                        "jaspar (JASPAR CORE vertebrates, shipped): "
                                                                        "add the strongest motif instance each "
                                                                        "variant overlaps (motif, strand, ref and "
                                                                        "alt log-odds scores).",
                                                     readable=False)] = None,
) -> None:
    """Score the effect of every VCF variant on predicted accessibility.

    Writes one row per allele and track (chrom, pos, id, ref, alt, track, status, flags, ref_sum,
    alt_sum, diff, log2fc, sad, max_abs, l2, then diff_p, log2fc_p, max_abs_p, ref_quantile,
    alt_quantile against a genome-wide null of --null-size random SNVs, scored first (its time said
    when over a minute) and kept in the null cache, or --null FILE, for every later run; with --motif-db, then motif, motif_strand, motif_ref_score,
    motif_alt_score); logs, progress and a status summary go to stderr. With --out FILE a killed run resumes from its finished chunks, and the chunks can be shared
    between the tasks of a SLURM array (or --shard I/N runs) that all write the same --out; the last
    to finish assembles it. Exits 0 when some alleles only got a status other than ok (the summary
    on stderr counts them) unless --strict.
    """
    from epiformer_cli.jobs.score_variants import score_variants
    from epiformer_cli.options import InferenceOptions, ScoreOptions
    from epiformer_cli.cli.common import progress_bars

    apply_threads(threads)
    options = ScoreOptions(
        inference=InferenceOptions(device=device, precision=precision, batch_size=batch_size, rc_average=rc_average,
                                   tracks=tracks),
        out_format=out_format, score_bins=score_bins, window_mode=window_mode, on_ref_mismatch=on_ref_mismatch,
        chunk_size=chunk_size, no_cons=no_cons, strict=strict, shard=shard, force=force,
        explain_top=explain_top[0] if explain_top else 0, explain_dir=str(explain_top[1]) if explain_top else None,
        explain_method=explain_method, explain_flank=explain_flank, null_size=null_size, seed=seed,
        null_per_window=null_per_window, max_null_minutes=max_null_minutes, null_path=str(null) if null else None,
        null_blacklist=str(null_blacklist) if null_blacklist else None,
        plots=str(plots) if plots else None, motif_db=str(motif_db) if motif_db else None,
    )
    with progress_bars(("null", "SNVs", None), ("scoring", "records", None)) as (null_advance, advance):
        score_variants(vcf, require(fasta, "--fasta", "EPIFORMER_FASTA"), cons,
                       require(model, "--model", "EPIFORMER_MODEL"), out, options=options, progress=advance,
                       null_progress=null_advance)
