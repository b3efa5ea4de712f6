"""What the calibration plots need, collected from score-variants' rows as written.

The plots are drawn from the output itself (TSV or VCF text, plain, bgzipped or BCF), so a run
assembled from other shards' or an earlier run's parts plots every variant; a run writing to
standard output feeds the same collector with the text it writes. Per track it keeps the ``ok``
alleles' ``diff`` and ``diff_p`` (4 bytes each: a million alleles of 18 tracks take 144 MB) and the
:data:`TOP` (allele, track) rows with the largest |diff| overall, ranked by
:func:`~epiformer_cli.variants.calibration_plots.top_key` (ties: smaller diff_p, then output order;
a VCF's rows are visited in the TSV's order, allele then track, so both formats rank alike).
"""

from __future__ import annotations

import heapq
from array import array
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from epiformer_cli.variants.calibration_plots import top_key
from epiformer_cli.variants.output import info_keys

#: variants the top-variants chart shows.
TOP = 30


class PlotCollector:
    """Collects ``diff`` and ``diff_p`` per track from rendered rows.

    Args:
        tracks: the tracks scored, in output order.
        kind: ``tsv`` or ``vcf`` (the rows' format).
    """

    def __init__(self, tracks: Sequence[str], kind: str) -> None:
        self.tracks = list(tracks)
        self.kind = kind
        self.diff: Dict[str, array] = {t: array("f") for t in self.tracks}
        self.diff_p: Dict[str, array] = {t: array("f") for t in self.tracks}
        self._top: List[Tuple[Tuple[float, float, int], str, str, float, float]] = []  # a min-heap on strength
        self._seen = 0
        self._columns: Optional[Dict[str, int]] = None
        self._keys = info_keys(self.tracks)

    # ---- feeding ----------------------------------------------------------------------------
    def feed(self, text: str) -> None:
        """Rows as written (header lines are recognised and skipped)."""
        for line in text.splitlines():
            if self.kind == "tsv":
                self._tsv_line(line)
            elif line and not line.startswith("#"):
                self._vcf_line(line)

    def _add(self, label: str, track: str, diff: float, p: float) -> None:
        if not (np.isfinite(diff) and np.isfinite(p)):
            return
        self.diff[track].append(diff)
        self.diff_p[track].append(p)
        item = (top_key(diff, p, self._seen), label, track, diff, p)  # weakest at the heap's top
        self._seen += 1
        if len(self._top) < TOP:
            heapq.heappush(self._top, item)
        elif item > self._top[0]:
            heapq.heapreplace(self._top, item)

    def _tsv_line(self, line: str) -> None:
        fields = line.split("\t")
        if self._columns is None or fields[0] == "chrom":
            if fields[0] == "chrom":
                self._columns = {name: i for i, name in enumerate(fields)}
            return
        c = self._columns
        if fields[c["status"]] != "ok" or "diff_p" not in c:
            return
        label = f"{fields[0]}:{int(fields[1]):,} {_short(fields[3])}>{_short(fields[4])}" + (
            f" {fields[2]}" if fields[2] != "." else "")
        self._add(label, fields[c["track"]], _float(fields[c["diff"]]), _float(fields[c["diff_p"]]))

    def _vcf_line(self, line: str) -> None:
        cols = line.rstrip("\n").split("\t", 8)
        info = dict(item.split("=", 1) for item in cols[7].split(";") if "=" in item)
        statuses = info.get("EPI_STATUS", "").split(",")
        alts = cols[4].split(",")
        values = {t: (info.get(f"EPI_DIFF_{k}", "").split(","), info.get(f"EPI_DIFF_P_{k}", "").split(","))
                  for t, k in self._keys.items()}
        for k, status in enumerate(statuses):  # allele, then track: the TSV's row order
            if status != "ok":
                continue
            label = f"{cols[0]}:{int(cols[1]):,} {_short(cols[3])}>{_short(alts[k])}" + (
                f" {cols[2]}" if cols[2] != "." else "")
            for track in self.tracks:
                diffs, ps = values[track]
                if k < len(diffs) and k < len(ps):
                    self._add(label, track, _float(diffs[k]), _float(ps[k]))

    def feed_file(self, path: Path) -> None:
        """Every row of a written output (TSV plain or gzipped; VCF plain, bgzipped or BCF)."""
        if self.kind == "tsv":
            import gzip

            with open(path, "rb") as probe:
                gz = probe.read(2) == b"\x1f\x8b"
            with (gzip.open(path, "rt") if gz else open(path)) as handle:
                for line in handle:
                    self._tsv_line(line.rstrip("\n"))
            return
        import pysam

        with pysam.VariantFile(str(path)) as vcf:
            for rec in vcf:
                self._vcf_line(str(rec))

    # ---- results ----------------------------------------------------------------------------
    def plot_inputs(self, null) -> Tuple[list, list]:
        """(TrackPlotData per track, TopVariant largest |diff| first) for
        :func:`~epiformer_cli.variants.calibration_plots.write_calibration_plots`."""
        from epiformer_cli.variants.calibration_plots import TopVariant, TrackPlotData

        tracks = [TrackPlotData(t, np.frombuffer(self.diff[t], dtype=np.float32).astype(np.float64),
                                np.frombuffer(self.diff_p[t], dtype=np.float32).astype(np.float64),
                                np.asarray(null.tracks[t]["diff"], dtype=np.float64))
                  for t in self.tracks]
        top = [TopVariant(label, track, diff, p) for _, label, track, diff, p in sorted(self._top, reverse=True)]
        return tracks, top


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:  # NA, .
        return float("nan")


def _short(allele: str, n: int = 8) -> str:
    return allele if len(allele) <= n else allele[:n - 2] + ".."
