"""report.html of an evaluate run: settings, the metrics table, the track-by-track matrix, the
scatter per track and example loci, as one self-contained page.

As the motifs report (:mod:`epiformer_cli.motifs.report`): the page works offline and is an
output, never a way in. Figures are the PNGs written beside it, embedded as ``data:`` URIs; the
style sheet is inline; there is no script and nothing is fetched (a Content-Security-Policy says so
to the browser as well); every name that came from the user's files (track, chromosome, path) is
escaped (:mod:`epiformer_cli.pages`).
"""

from __future__ import annotations

import base64
import math
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import numpy as np

from epiformer_cli.evaluate.score import COLUMNS, Scores
from epiformer_cli.io.files import atomic_write_text
from epiformer_cli.pages import escape, head, settings_table
from epiformer_cli.plotting import PLOTS_EXTRA

#: the matrix is also written as a table of numbers up to this many tracks.
MAX_MATRIX_TABLE = 30

#: what each column of the metrics table means, shown under the table.
COLUMN_HELP = {
    "bins": "128 bp bins scored (a bin in two overlapping store windows counts twice, as in train)",
    "pearson": "Pearson r of log(x + 1), predicted vs observed, over the bins (train's number)",
    "spearman": "Spearman's rho over the bins (ties share their mean rank)",
    "positive_bins": "peak bins among them (overlapping a peak, or the track's top bins)",
    "auroc": "peak bins vs the rest, ranked by the predicted signal: area under the ROC curve (0.5 is chance)",
    "auprc": "the same as average precision (chance: the fraction of peak bins)",
    "peaks": "peaks whose every bin was scored",
    "peak_pearson": "Pearson r of log(signal + 1) summed over each peak",
    "peak_spearman": "Spearman's rho of the peak sums",
    "specificity": "r over peaks of predicted vs observed z-scores of log signal across tracks",
}

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; font-size: 14px;
       color: #1d1d1f; margin: 24px; max-width: 1400px; }
h1 { font-size: 22px; margin: 0 0 12px 0; }
h2 { font-size: 17px; margin: 28px 0 6px 0; }
p.caption { color: #555; margin: 4px 0 8px 0; max-width: 62em; }
p.note { background: #fff4d6; border: 1px solid #e8d08a; padding: 8px 12px; max-width: 62em; }
p.footer { color: #888; font-size: 12px; margin-top: 24px; }
table { border-collapse: collapse; }
th, td { border: 1px solid #d4d4d8; padding: 3px 8px; overflow-wrap: anywhere; }
th { background: #f4f4f5; font-weight: 600; text-align: left; }
table.settings th { width: 12em; }
table.settings td { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; max-width: 60em; }
table.metrics td, table.matrix td { text-align: right; font-variant-numeric: tabular-nums; }
table.metrics td.track, table.matrix th { text-align: left; max-width: 14em; }
table.metrics tr.mean td { font-weight: 600; border-top: 2px solid #a1a1aa; }
dl.columns { max-width: 62em; color: #555; font-size: 13px; }
dl.columns dt { font-weight: 600; float: left; clear: left; width: 9em; }
dl.columns dd { margin-left: 10em; }
img.figure { max-width: 100%; height: auto; border: 1px solid #e4e4e7; }
"""


def write_report(path: Path, scores: Scores, *, settings: Mapping[str, str], figures: Mapping[str, Optional[Path]],
                 title: str = "epiformer evaluate") -> None:
    """Write ``report.html`` (atomically).

    Args:
        path: the HTML file.
        scores: the run's numbers.
        settings: what the run was made from (inputs, chromosomes, options), in the order given.
        figures: ``heatmap``, ``scatter``, ``loci`` -> the PNG written (embedded), or None when it
            was not drawn.
    """
    from epiformer_cli import __version__

    parts = [head(title, _STYLE), f"<h1>{escape(title)}</h1>", settings_table(settings), _summary(scores)]
    if not any(figures.values()):
        parts.append(f'<p class="note">Figures not drawn: matplotlib is not installed ({escape(PLOTS_EXTRA)}).</p>')
    parts.append(_metrics_table(scores))
    parts.append('<h2 id="matrix">Predicted vs observed, track by track</h2>'
                 '<p class="caption">Pearson r of log(x + 1) per 128 bp bin between the predictions of one track '
                 '(row) and the observations of another (column). A model that learned what makes each cell '
                 'type different has its largest value of each row on the diagonal; a row that is high all '
                 'across predicts accessibility shared by every track.</p>')
    parts.append(_figure(figures.get("heatmap"), "heat map of predicted vs observed tracks"))
    if len(scores.tracks) <= MAX_MATRIX_TABLE:
        parts.append(_matrix_table(scores))
    parts.append('<h2 id="scatter">Predicted vs observed, per bin</h2>'
                 '<p class="caption">Density of bins (log colour scale) by observed and predicted log(x + 1); '
                 'the dashed line is y = x.</p>')
    parts.append(_figure(figures.get("scatter"), "scatter of predicted vs observed per track"))
    if scores.loci:
        listed = ", ".join(f"{locus.chrom}:{locus.start:,}-{locus.end:,}" for locus in scores.loci)
        parts.append('<h2 id="loci">Example loci</h2>'
                     f'<p class="caption">Around the peaks of highest observed signal: {escape(listed)}. Observed '
                     'signal in grey, predicted in red, per 128 bp bin.</p>')
        parts.append(_figure(figures.get("loci"), "example loci"))
    parts.append(f'<p class="footer">epiformer {escape(__version__)} evaluate</p></body>\n</html>\n')
    atomic_write_text(path, "\n".join(parts))





def number(value: Any) -> str:
    """A table cell: integers with thousands separators, floats with 3 decimals, NaN as ``n/a``."""
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return "n/a" if math.isnan(value) else f"{float(value):.3f}"
    return escape(value)


def _summary(scores: Scores) -> str:
    mean = scores.mean_row()
    overall = number(scores.specificity)
    return ('<h2 id="summary">Summary</h2><p class="caption">'
            f'{scores.bins:,} bins of 128 bp ({scores.rows:,} scored, counting overlapping windows per window), '
            f'{len(scores.tracks)} track(s). Mean over tracks: Pearson r <b>{number(mean["pearson"])}</b>, '
            f'Spearman {number(mean["spearman"])}, AUROC {number(mean["auroc"])}, AUPRC {number(mean["auprc"])}; '
            f'at {scores.peaks:,} peaks ({escape(scores.peaks_source)}'
            + (f'; {scores.peaks_partial:,} more left out, not every bin scored' if scores.peaks_partial else '')
            + f'): Pearson r {number(mean["peak_pearson"])}. Cell-type specificity over all tracks: '
            f'<b>{overall}</b> ({scores.specificity_peaks:,} peaks).</p>')


def _metrics_table(scores: Scores) -> str:
    out = ['<h2 id="metrics">Metrics per track</h2><table class="metrics" id="metrics-table"><thead><tr>']
    out += [f"<th>{escape(c)}</th>" for c in COLUMNS]
    out.append("</tr></thead><tbody>")
    for css, row in [("", r) for r in scores.table] + [(' class="mean"', scores.mean_row())]:
        cells = [f'<td class="track">{escape(row["track"])}</td>'] + [f"<td>{number(row[c])}</td>" for c in COLUMNS[1:]]
        out.append(f"<tr{css}>{''.join(cells)}</tr>")
    out.append("</tbody></table><dl class=\"columns\">")
    out += [f"<dt>{escape(c)}</dt><dd>{escape(text)}</dd>" for c, text in COLUMN_HELP.items()]
    out.append("</dl>")
    return "".join(out)


def _matrix_table(scores: Scores) -> str:
    tracks = scores.tracks
    out = ['<table class="matrix" id="matrix-table"><thead><tr><th>predicted \\ observed</th>']
    out += [f"<th>{escape(t)}</th>" for t in tracks]
    out.append("</tr></thead><tbody>")
    for i, name in enumerate(tracks):
        out.append(f"<tr><th>{escape(name)}</th>" + "".join(f"<td>{number(float(v))}</td>" for v in scores.matrix[i])
                   + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _figure(path: Optional[Path], alt: str) -> str:
    if path is None or not Path(path).exists():
        return ""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<p><img class="figure" src="data:image/png;base64,{data}" alt="{escape(alt)}"></p>'


def settings_rows(pairs: Dict[str, Any]) -> Dict[str, str]:
    """Settings as the table shows them: None left out, lists joined by commas."""
    out = {}
    for key, value in pairs.items():
        if value is None:
            continue
        out[key] = ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return out
