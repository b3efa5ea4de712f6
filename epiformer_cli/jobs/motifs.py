"""The motifs job: which transcription factors' sites drive each track, from explain's contributions.

``motifs --contrib DIR [DIR ...] --out OUT`` reads one or more finished ``explain`` folders (shards
or separate runs of one model and genome), runs TF-MoDISco (modisco-lite) per track
(:mod:`~epiformer_cli.motifs.discover`), matches every pattern against a motif database with TOMTOM
(memelite; :mod:`~epiformer_cli.motifs.match`) and writes into ``OUT``:

* ``motifs.tsv``: one row per pattern (track, sign, seqlets, consensus, top 3 matches with q-values);
* ``patterns.meme``: the trimmed patterns as PWMs (``MOTIF <pattern> <factor>``), for FIMO, TOMTOM
  and ``score-variants --motif-db``;
* ``seqlets.bed``: every seqlet's core in genome coordinates, named by its pattern (for IGV);
* ``modisco.<track>.h5``: modisco-lite's own result file per track;
* ``report.html``: logos, matches and a table of which motif drives which track;
* ``motifs.json``: what the run read and found (written last: the folder's mark of a finished run).

Each track's TF-MoDISco result is kept in ``OUT/motifs.parts`` as it finishes (a
:class:`~epiformer_cli.runs.ResumableRun`), so a killed run resumes at the first unfinished track.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from epiformer_cli import __version__
from epiformer_cli.errors import UsageError
from epiformer_cli.motifs.contributions import CONTRIB, ExplainFolder, check_compatible, check_tracks, open_folder
from epiformer_cli.motifs.discover import Seqlet, SeqletCounts
from epiformer_cli.motifs.patterns import NAMED_Q, Pattern, trim_span
from epiformer_cli.options import MotifsOptions
from epiformer_cli.progress import Progress

log = logging.getLogger(__name__)

KIND = "epiformer-motifs"
FORMAT_VERSION = 1
PARTS = "motifs.parts"
PROVENANCE = "motifs.json"
TSV_COLUMNS = ("pattern", "track", "sign", "seqlets", "consensus", "factor", "match_1", "q_1", "match_2", "q_2",
               "match_3", "q_3")


@dataclass
class MotifsSummary:
    """What a run found: the patterns (matched), their seqlets, seqlet counts per track, files written."""

    out: Path
    tracks: List[str] = field(default_factory=list)
    patterns: List[Pattern] = field(default_factory=list)
    seqlets: List[Seqlet] = field(default_factory=list)
    counts: Dict[str, SeqletCounts] = field(default_factory=dict)
    regions: int = 0
    database: str = ""
    files: List[str] = field(default_factory=list)
    resumed: int = 0
    seconds: float = 0.0

    def factors(self) -> Dict[str, List[str]]:
        """Per track, the factors its positive patterns are named after (by seqlets, repeats dropped)."""
        out: Dict[str, List[str]] = {}
        for track in self.tracks:
            named = sorted((p for p in self.patterns if p.track == track and p.sign == "pos" and p.factor),
                           key=lambda p: -p.seqlets)
            out[track] = list(dict.fromkeys(p.factor for p in named))
        return out


def motifs(contrib: Sequence[str | Path], out: str | Path, *, options: MotifsOptions = MotifsOptions(),
           progress: Optional[Progress] = None) -> MotifsSummary:
    """Find and name the motifs of explain folders (see the module docstring).

    Args:
        contrib: explain output folders (one model, one genome).
        out: the output folder (created; a killed run resumes there).
        options: tracks, window, max seqlets, motif database, force.
        progress: ``progress(n, total=tracks)`` as tracks finish.

    Raises:
        UsageError / InputFileError: a bad folder, track, database or destination (nothing written),
            or too few seqlets to find a pattern in any track.
    """
    from epiformer_cli.io.identity import file_identity
    from epiformer_cli.motifs.database import load_motif_db
    from epiformer_cli.runs import ResumableRun, check_output_dir, remove_finished, replace_or_refuse

    from epiformer_cli.motifs import use_numba_cache

    use_numba_cache()  # before modisco-lite and memelite import numba
    started = time.perf_counter()
    out = Path(out)
    if not contrib:
        raise UsageError("give at least one --contrib folder (the --out of epiformer explain)")
    folders = [open_folder(path) for path in contrib]
    _refuse_repeats(folders)
    check_compatible(folders)
    tracks = check_tracks(folders, options.tracks)
    inputs = [("--contrib", f.path / CONTRIB) for f in folders]
    if options.motif_db is not None:
        from epiformer_cli.motifs.database import motif_file

        inputs.append(("--motif-db", motif_file(options.motif_db)))  # a missing file: one line, now
    check_output_dir(out, inputs=inputs, marks=(PROVENANCE, PARTS))
    replace_or_refuse(out, holds=f"motifs results ({out / PROVENANCE})" if (out / PROVENANCE).exists() else None,
                      force=options.force, fix="choose another --out, or --force to replace them")
    database = load_motif_db(options.motif_db)  # a bad database is refused before the long work
    summary = MotifsSummary(out, tracks=tracks, database=database.source)
    remove_finished(out, PROVENANCE)

    run = ResumableRun(out / PARTS, kind=KIND, format_version=FORMAT_VERSION,
                       settings={"tool": __version__,
                                 "inputs": {"contrib": [file_identity(f.path / CONTRIB) for f in folders]},
                                 "options": options.fingerprint(), "tracks": tracks},
                       what="motifs parts folder", force=options.force,
                       fix="run the same command to resume, or --force to discard the parts")
    if run.resumed:
        log.info("resuming: reusing the tracks finished in %s", run.root)
    for track in tracks:
        summary.resumed += int(run.is_done(_piece(track)))
        if not run.is_done(_piece(track)):
            _discover_track(folders, track, options, run, summary)
        if progress is not None:
            progress(1, total=len(tracks))
    for track in tracks:
        patterns, seqlets, counts, regions = _read_track(run, track)
        summary.patterns.extend(patterns)
        summary.seqlets.extend(seqlets)
        summary.counts[track] = counts
        summary.regions = regions
    if not summary.patterns:
        run.discard()  # nothing worth resuming: a run with more regions starts afresh
        raise UsageError(_too_few(summary))
    from epiformer_cli.motifs.match import match_patterns

    log.info("matching %d pattern(s) against %s (TOMTOM)", len(summary.patterns), database.source)
    match_patterns(summary.patterns, database.motifs)
    _write_outputs(out, run, folders, options, summary)
    run.discard()
    summary.seconds = time.perf_counter() - started
    _report(summary)
    return summary


def _refuse_repeats(folders: Sequence[ExplainFolder]) -> None:
    seen = set()
    for f in folders:
        key = f.path.resolve()
        if key in seen:
            raise UsageError(f"--contrib {f.path} is given twice: give each explain folder once")
        seen.add(key)


def _piece(track: str) -> str:
    from epiformer_cli.names import file_part

    return f"track.{file_part(track)}.json"


def _h5_name(track: str) -> str:
    from epiformer_cli.names import file_part

    return f"modisco.{file_part(track)}.h5"


def _discover_track(folders, track: str, options: MotifsOptions, run, summary: MotifsSummary) -> None:
    """TF-MoDISco over one track; its result file and its piece (counts and seqlets) into the run."""
    from epiformer_cli.motifs.contributions import load_examples
    from epiformer_cli.motifs.discover import count_seqlets, run_track, save_result

    examples = load_examples(folders, track, options.window)
    counts = count_seqlets(examples)
    log.info("%s: %s seqlets (%d positive, %d negative) in %s regions of %d bp", track,
             f"{counts.pos + counts.neg:,}", counts.pos, counts.neg, f"{len(examples.names):,}", options.window)
    from epiformer_cli.motifs.discover import MIN_SEQLETS

    seqlets: List[Seqlet] = []
    failure = None
    if max(counts.pos, counts.neg) > MIN_SEQLETS:
        t0 = time.perf_counter()
        try:
            result = run_track(examples, track, max_seqlets=options.max_seqlets, window=options.window,
                               counts=counts)
        except UsageError as exc:  # a track modisco-lite cannot cluster: the others may still have patterns
            failure = str(exc)
            log.warning("%s", failure)
        else:
            log.info("%s: TF-MoDISco found %d pattern(s) in %.1f s", track, len(result.patterns),
                     time.perf_counter() - t0)
            save_result(run.path(_h5_name(track)), result, options.window)
            seqlets = result.seqlets
    else:
        log.warning("%s: too few seqlets to cluster (TF-MoDISco needs more than %d of one sign)", track, MIN_SEQLETS)
    record = {"counts": counts.as_dict(), "regions": len(examples.names), "failure": failure,
              "seqlets": [[s.chrom, s.start, s.end, s.strand, s.pattern, s.region, s.contribution] for s in seqlets]}
    run.write_text(_piece(track), json.dumps(record) + "\n")


def _read_track(run, track: str):
    """A finished track's patterns (from its modisco-lite file), seqlets, counts and regions."""
    record = json.loads(run.read_text(_piece(track)))
    c = record["counts"]
    counts = SeqletCounts(pos=c["pos"], neg=c["neg"],
                          in_patterns={"pos": c["pos_in_patterns"], "neg": c["neg_in_patterns"]})
    seqlets = [Seqlet(*row) for row in record["seqlets"]]
    patterns: List[Pattern] = []
    h5 = run.path(_h5_name(track))
    if h5.exists():
        import h5py

        from epiformer_cli.names import file_part

        with h5py.File(h5, "r") as handle:
            for sign in ("pos", "neg"):
                group = handle.get(f"{sign}_patterns")
                if group is None:
                    continue
                for index in range(len(group)):
                    g = group[f"pattern_{index}"]
                    cwm = np.nan_to_num(np.asarray(g["contrib_scores"], dtype=np.float64))
                    ppm = np.nan_to_num(np.asarray(g["sequence"], dtype=np.float64))
                    patterns.append(Pattern(
                        name=f"{file_part(track)}_{sign}_{index}", track=track, sign=sign, index=index,
                        ppm=ppm, cwm=cwm,
                        hcwm=np.nan_to_num(np.asarray(g["hypothetical_contribs"], dtype=np.float64)),
                        seqlets=int(g["seqlets"]["n_seqlets"][0]), trim=trim_span(cwm, ppm)))
    return patterns, seqlets, counts, int(record["regions"])


def _too_few(summary: MotifsSummary) -> str:
    from epiformer_cli.motifs.discover import MIN_SEQLETS, regions_needed

    found = ", ".join(f"{t} {c.pos}+/{c.neg}-" for t, c in summary.counts.items())
    needed = max(regions_needed(c, summary.regions) for c in summary.counts.values())
    return (f"too few seqlets to find a pattern ({found} in {summary.regions:,} regions; TF-MoDISco needs more than "
            f"{MIN_SEQLETS} of one sign in a track): explain about {needed:,} or more regions (e.g. explain "
            f"--peaks pred.bw --top {max(needed, 1000):,}) and give every folder")


# ---- outputs ----------------------------------------------------------------------------------------
def _write_outputs(out: Path, run, folders, options: MotifsOptions, summary: MotifsSummary) -> None:
    from epiformer_cli.io.files import atomic_output, atomic_write_text
    from epiformer_cli.motifs.database import Motif, write_meme
    from epiformer_cli.motifs.report import write_report

    out.mkdir(parents=True, exist_ok=True)
    with atomic_output(out / "motifs.tsv", "w") as handle:
        handle.write("\t".join(TSV_COLUMNS) + "\n")
        for p in summary.patterns:
            cells = [p.name, p.track, p.sign, str(p.seqlets), p.consensus(), p.factor or "."]
            for k in range(3):
                m = p.matches[k] if k < len(p.matches) else None
                cells += [m.label, f"{m.qvalue:.3g}"] if m is not None else [".", "NA"]
            handle.write("\t".join(cells) + "\n")
    pwms = [Motif(motif_id=p.name, name=p.factor, pwm=_normalised(p.trimmed_ppm).T) for p in summary.patterns]
    write_meme(out / "patterns.meme", pwms)
    _write_bed(out / "seqlets.bed", summary.seqlets, {p.name: p for p in summary.patterns})
    h5s = []
    for track in summary.tracks:
        source = run.path(_h5_name(track))
        if source.exists():
            shutil.copyfile(source, out / _h5_name(track))  # the parts folder is removed once all is written
            h5s.append(_h5_name(track))
    settings = {"explain folders": ", ".join(str(f.path) for f in folders),
                "regions": f"{summary.regions:,}", "tracks": ", ".join(summary.tracks),
                "window": f"{options.window} bp", "max seqlets": f"{options.max_seqlets:,} per track and sign",
                "database": summary.database, "named when": f"best match q <= {NAMED_Q}",
                "epiformer": __version__}
    write_report(out / "report.html", summary.patterns, summary.tracks, title="epiformer motifs",
                 settings=settings, seqlet_counts={t: c.as_dict() for t, c in summary.counts.items()})
    summary.files = ["motifs.tsv", "patterns.meme", "seqlets.bed", *h5s, "report.html"]
    provenance = {"epiformer_version": __version__, "contrib": [str(f.path) for f in folders],
                  "identities": {"model": folders[0].model, "genome": folders[0].genome},
                  "options": options.to_dict(), "database": summary.database, "tracks": summary.tracks,
                  "regions": summary.regions, "seqlets": {t: c.as_dict() for t, c in summary.counts.items()},
                  "patterns": len(summary.patterns), "files": summary.files}
    atomic_write_text(out / PROVENANCE, json.dumps(provenance, indent=1) + "\n")


def _normalised(ppm: np.ndarray) -> np.ndarray:
    """(L, 4) frequencies with each row summing to 1 (a row no seqlet covered becomes uniform)."""
    ppm = np.clip(np.nan_to_num(np.asarray(ppm, dtype=np.float64)), 0, None)
    sums = ppm.sum(axis=1, keepdims=True)
    return np.where(sums > 0, ppm / np.where(sums > 0, sums, 1), 0.25)


def _write_bed(path: Path, seqlets: Sequence[Seqlet], patterns: Dict[str, Pattern]) -> None:
    """BED6 (+ region, contribution) sorted by chromosome name and start: name = pattern (and
    factor), score = |contribution| scaled to 0-1000 within the file."""
    from epiformer_cli.io.files import atomic_output

    top = max((abs(s.contribution) for s in seqlets), default=0.0) or 1.0
    with atomic_output(path, "w") as handle:
        handle.write("#chrom\tstart\tend\tpattern\tscore\tstrand\tregion\tcontribution\n")
        for s in sorted(seqlets, key=lambda s: (s.chrom, s.start, s.end, s.pattern)):
            p = patterns.get(s.pattern)
            name = f"{s.pattern}({p.factor})" if p is not None and p.factor else s.pattern
            score = int(round(1000 * abs(s.contribution) / top))
            handle.write(f"{s.chrom}\t{s.start}\t{s.end}\t{name}\t{score}\t{s.strand}\t{s.region}\t"
                         f"{s.contribution:.6g}\n")


def _report(summary: MotifsSummary) -> None:
    found = ", ".join(f"{t}: {', '.join(f[:5]) or 'none named'}" for t, f in summary.factors().items())
    log.info("motifs: %d pattern(s) in %d track(s) from %s regions in %.1f s; factors (positive patterns): %s; "
             "wrote %s", len(summary.patterns), len(summary.tracks), f"{summary.regions:,}", summary.seconds, found,
             ", ".join(str(summary.out / f) for f in summary.files))
