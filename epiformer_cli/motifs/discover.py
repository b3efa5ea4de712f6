"""TF-MoDISco, as the ``modisco-lite`` package implements it, over one track's contributions.

TF-MoDISco finds *seqlets* (short stretches whose contributions stand out from a Laplacian null at
a target FDR), splits them by sign (positive: the bases raise the prediction; negative: they lower
it), clusters each sign's seqlets by the similarity of their contribution profiles and aggregates
each cluster into a *pattern*: per position the base frequencies (PPM) and mean contributions
(CWM). Nothing of that is re-implemented here: this module calls ``modiscolite`` and turns its
results into :class:`~epiformer_cli.motifs.patterns.Pattern` objects and genome coordinates.
"""

from __future__ import annotations

import logging
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from epiformer_cli.errors import UsageError
from epiformer_cli.motifs.contributions import Examples
from epiformer_cli.motifs.patterns import Pattern, trim_span

log = logging.getLogger(__name__)

#: modisco-lite's settings that epiformer fixes: those its own command line (``modisco motifs``) uses
SLIDING_WINDOW = 20
FLANK = 5
TARGET_FDR = 0.05
LEIDEN_RUNS = 2
TRIM_TO = 30
INITIAL_FLANK = 10
#: TF-MoDISco clusters a sign's seqlets only when there are more than this many
MIN_SEQLETS = 100


@dataclass
class SeqletCounts:
    """Seqlets of one track: found per sign, and kept in patterns."""

    pos: int = 0
    neg: int = 0
    in_patterns: Dict[str, int] = field(default_factory=lambda: {"pos": 0, "neg": 0})

    def as_dict(self) -> Dict[str, int]:
        return {"pos": self.pos, "neg": self.neg, "pos_in_patterns": self.in_patterns["pos"],
                "neg_in_patterns": self.in_patterns["neg"]}


@dataclass
class Seqlet:
    """One seqlet of a pattern in genome coordinates (its trimmed core: the columns matched)."""

    chrom: str
    start: int
    end: int
    strand: str
    pattern: str
    region: str
    contribution: float


@dataclass
class TrackResult:
    """What TF-MoDISco found in one track: patterns (pos first), seqlets, counts, and the raw
    modisco-lite patterns for its result file."""

    track: str
    patterns: List[Pattern]
    seqlets: List[Seqlet]
    counts: SeqletCounts
    raw: Tuple[Optional[list], Optional[list]]


def count_seqlets(examples: Examples) -> SeqletCounts:
    """Seqlets TF-MoDISco will find, per sign (its own extraction, run once before clustering so a
    run with too few is refused in seconds, not after minutes)."""
    from modiscolite import extract_seqlets

    contrib = examples.one_hot * examples.hypothetical
    scores = contrib.sum(axis=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        coords, threshold = extract_seqlets.extract_seqlets(
            attribution_scores=scores, window_size=SLIDING_WINDOW, flank=FLANK,
            suppress=int(0.5 * SLIDING_WINDOW) + FLANK, target_fdr=TARGET_FDR, min_passing_windows_frac=0.03,
            max_passing_windows_frac=0.2, weak_threshold_for_counting_sign=0.8)
    counts = SeqletCounts()
    for seqlet in coords:
        flank = int(0.5 * ((seqlet.end - seqlet.start) - SLIDING_WINDOW))
        attr = float(scores[seqlet.example_idx, seqlet.start + flank:seqlet.end - flank].sum())
        if attr > threshold:
            counts.pos += 1
        elif attr < -threshold:
            counts.neg += 1
    return counts


def regions_needed(counts: SeqletCounts, n_regions: int) -> int:
    """About how many regions give more than :data:`MIN_SEQLETS` seqlets of the commoner sign, at
    the rate these regions gave (at least twice the regions given when they gave none)."""
    found = max(counts.pos, counts.neg)
    if found == 0:
        return 2 * n_regions if n_regions else 1000
    return int(math.ceil((MIN_SEQLETS + 1) * n_regions / found))


@contextmanager
def _modisco_failures(track: str) -> Iterator[None]:
    """modisco-lite's failures on data it cannot cluster, as one line. Its clustering (leidenalg)
    raises a bare BaseException ("Cannot accept NaN weights") when few seqlets have no neighbours."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except BaseException as exc:  # noqa: B036 - leidenalg raises BaseException itself
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"TF-MoDISco could not cluster the seqlets of track {track!r} ({detail}): too few or too "
                         f"alike; explain more regions (thousands) and run motifs again") from None


def run_track(examples: Examples, track: str, *, max_seqlets: int, window: int,
              counts: Optional[SeqletCounts] = None) -> TrackResult:
    """TF-MoDISco over one track: its patterns (``<track>_pos_<i>`` then ``<track>_neg_<i>``) and
    their seqlets in genome coordinates.

    Args:
        examples: the track's one-hot and hypothetical contributions (N, W, 4).
        max_seqlets: at most this many seqlets per sign are clustered (modisco-lite keeps the first).
        window: the examples' width W (recorded in the result file).
    """
    from modiscolite import tfmodisco

    from epiformer_cli.names import file_part

    counts = counts or count_seqlets(examples)
    with warnings.catch_warnings(), _modisco_failures(track):
        # modisco-lite divides 0 by 0 for columns no seqlet covers (NaN frequencies, dropped by the trim)
        warnings.simplefilter("ignore")
        pos, neg = tfmodisco.TFMoDISco(
            one_hot=examples.one_hot, hypothetical_contribs=examples.hypothetical,
            sliding_window_size=SLIDING_WINDOW, flank_size=FLANK, target_seqlet_fdr=TARGET_FDR,
            n_leiden_runs=LEIDEN_RUNS, trim_to_window_size=TRIM_TO, initial_flank_to_add=INITIAL_FLANK,
            final_flank_to_add=0, min_metacluster_size=MIN_SEQLETS, max_seqlets_per_metacluster=max_seqlets,
            verbose=False)
    stem = file_part(track)
    patterns: List[Pattern] = []
    seqlets: List[Seqlet] = []
    for sign, found in (("pos", pos), ("neg", neg)):
        for index, raw in enumerate(found or []):
            ppm = np.nan_to_num(np.asarray(raw.sequence, dtype=np.float64))
            cwm = np.nan_to_num(np.asarray(raw.contrib_scores, dtype=np.float64))
            hcwm = np.nan_to_num(np.asarray(raw.hypothetical_contribs, dtype=np.float64))
            pattern = Pattern(name=f"{stem}_{sign}_{index}", track=track, sign=sign, index=index, ppm=ppm,
                              cwm=cwm, hcwm=hcwm, seqlets=len(raw.seqlets), trim=trim_span(cwm, ppm))
            patterns.append(pattern)
            counts.in_patterns[sign] += len(raw.seqlets)
            seqlets.extend(_genome_seqlets(raw, pattern, examples))
    return TrackResult(track, patterns, seqlets, counts, (pos, neg))


def _genome_seqlets(raw, pattern: Pattern, examples: Examples) -> List[Seqlet]:
    """A pattern's seqlets as genome spans of its trimmed core. Seqlet columns run along the
    pattern on ``+``; on ``-`` (``is_revcomp``) pattern column j is seqlet column ``len - 1 - j``."""
    a, b = pattern.trim
    out = []
    for s in raw.seqlets:
        length = s.end - s.start
        lo, hi = (s.start + a, s.start + b) if not s.is_revcomp else (s.start + length - b, s.start + length - a)
        chrom, start, end = examples.genome_span(s.example_idx, lo, hi)
        if end <= start:
            continue  # the core lies in the padding of a short region
        value = float((examples.one_hot[s.example_idx, lo:hi] * examples.hypothetical[s.example_idx, lo:hi]).sum())
        out.append(Seqlet(chrom, start, end, "-" if s.is_revcomp else "+", pattern.name,
                          str(examples.names[s.example_idx]), value))
    return out


def save_result(path: Path, result: TrackResult, window: int) -> None:
    """modisco-lite's own result file (``modisco.<track>.h5``: ``modisco-lite report`` and its
    other tools read it), written atomically."""
    import h5py
    from modiscolite import io as modisco_io

    from epiformer_cli.io.files import atomic_path

    # modisco_io.save_hdf5's layout, through its save_pattern, in a file closed before it is published
    # (save_hdf5 leaves its file open until garbage collection)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as handle:
            handle.attrs["window_size"] = window
            for group, found in (("pos_patterns", result.raw[0]), ("neg_patterns", result.raw[1])):
                if found is not None:
                    holder = handle.create_group(group)
                    for index, pattern in enumerate(found):
                        modisco_io.save_pattern(pattern, holder.create_group(f"pattern_{index}"))
