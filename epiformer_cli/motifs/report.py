"""report.html of a motifs run: which database motif drives which track, the seqlets of each track,
and every pattern with its logos and best matches, as one self-contained page.

The page works offline and is an output, never a way in: every logo is an embedded PNG (a
``data:`` URI), the style sheet is inline, there is no script and nothing is fetched (a
Content-Security-Policy says so to the browser as well), and every name that came from the user's
files or the database (track, pattern, motif id and name, setting) is escaped with
:func:`~epiformer_cli.pages.escape`. No name is drawn inside an image, so none needs matplotlib's escaping.

matplotlib and logomaker (the ``plots`` extra) are imported when a report is written, through
:mod:`epiformer_cli.plotting`; without them the report is written without logos, saying why.
"""

from __future__ import annotations

import base64
import io
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from epiformer_cli.io.files import atomic_write_text
from epiformer_cli.motifs.patterns import NAMED_Q, Match, Pattern
from epiformer_cli.pages import escape, head, settings_table
from epiformer_cli.plotting import PLOTS_EXTRA, import_pyplot

log = logging.getLogger(__name__)

_BASES = "ACGT"
#: Size of every logo: 4 x 1 in at 100 dpi is 400 x 100 px, about 5.5 kB as a 64-colour PNG (7.5 kB in
#: base64), so that a report of 100 patterns (three logos each) is about 2.3 MB.
LOGO_INCHES = (4.0, 1.0)
LOGO_DPI = 100
#: The axes' place in every logo (figure fractions). The same in all of them, so that the columns of
#: a pattern's logos, drawn over the same x range, sit under one another in the page.
_AXES_RECT = (0.13, 0.06, 0.85, 0.88)
#: Letters are flat colours on white: 64 palette colours keep the anti-aliased edges and make the
#: PNG about a quarter of matplotlib's RGBA one.
_PALETTE_COLORS = 64
#: logomaker's letter width (Glyph's default): letters of neighbouring columns do not touch.
_GLYPH_WIDTH = 0.95
#: Heat-map colours of the cross-track table (RGB): positive patterns warm, negative ones cool.
_POS_RGB = (200, 55, 40)
_NEG_RGB = (40, 95, 190)
#: The lightest tint a non-empty cell gets, so that a few seqlets still show against an empty cell.
_MIN_TINT = 0.12
MINUS = "\u2212"


@dataclass
class MotifRow:
    """One row of the cross-track table: the patterns named after one factor, or one unnamed
    pattern.

    Attributes:
        name: the factor (:attr:`Pattern.factor`: its best match's short name), or the unnamed
            pattern's own name.
        matched: whether ``name`` is a factor's.
        motif_ids: the database ids of the best matches grouped under ``name`` (``MA0139.2``).
        pos, neg: track -> seqlets summed over the row's positive (negative) patterns of that track.
        patterns: the row's patterns, in the order given.
    """

    name: str
    matched: bool
    motif_ids: List[str] = field(default_factory=list)
    pos: Dict[str, int] = field(default_factory=dict)
    neg: Dict[str, int] = field(default_factory=dict)
    patterns: List[Pattern] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.pos.values()) + sum(self.neg.values())


def motif_by_track(patterns: Sequence[Pattern]) -> List[MotifRow]:
    """The cross-track table "which motif drives which track": patterns grouped by their factor
    (:attr:`Pattern.factor`, the short name of a best match with q <= :data:`NAMED_Q`); a pattern
    without one is a row of its own, under its name.

    Rows with a match come first, then the unmatched ones; each group by total seqlets, most first
    (ties by name). A cell sums the seqlets of the row's patterns of one track and sign: two
    positive patterns of one track that both match CTCF add up.
    """
    rows: Dict[Tuple[bool, str], MotifRow] = {}
    for pattern in patterns:
        factor = pattern.factor
        key = (True, factor) if factor else (False, pattern.name)
        row = rows.setdefault(key, MotifRow(name=key[1], matched=key[0]))
        if factor and pattern.best.motif_id not in row.motif_ids:
            row.motif_ids.append(pattern.best.motif_id)
        cells = row.neg if pattern.sign == "neg" else row.pos
        cells[pattern.track] = cells.get(pattern.track, 0) + int(pattern.seqlets)
        row.patterns.append(pattern)
    return sorted(rows.values(), key=lambda row: (not row.matched, -row.total, row.name))


def information_content(ppm: np.ndarray) -> np.ndarray:
    """(L, 4) letter heights in bits: each column's frequencies times its information content
    ``2 + sum p log2 p`` (uniform background). Columns are renormalised to sum to 1 first; a
    column of zeros (or NaN) stays zero."""
    ppm = np.nan_to_num(np.clip(np.asarray(ppm, dtype=np.float64), 0.0, None))
    sums = ppm.sum(axis=1, keepdims=True)
    ppm = np.divide(ppm, sums, out=np.zeros_like(ppm), where=sums > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(ppm > 0, ppm * np.log2(ppm), 0.0).sum(axis=1, keepdims=True)
    return ppm * np.where(sums > 0, 2.0 - entropy, 0.0)


def match_matrix(match: Match) -> np.ndarray:
    """(L_motif, 4) probabilities of ``match`` as it aligns to the pattern: the stored (4, L_motif)
    matrix transposed, and reverse-complemented when it matched on the ``-`` strand (columns
    reversed, A<->T and C<->G)."""
    pwm = np.asarray(match.pwm, dtype=np.float64)
    if match.strand == "-":
        pwm = pwm[::-1, ::-1]
    return pwm.T


def write_report(path: Path, patterns: Sequence[Pattern], tracks: Sequence[str], *, title: str,
                 settings: Mapping[str, str], seqlet_counts: Mapping[str, Mapping[str, int]]) -> None:
    """Write ``report.html`` (atomically; replaced if it exists).

    Args:
        path: the HTML file to write.
        patterns: every pattern of the run, with its database matches (best first).
        tracks: the run's tracks, in the order of the table's columns (a track with no pattern is
            an empty column; a pattern's track missing from ``tracks`` gets a column at the end).
        title: the page's title.
        settings: what the run was made from, shown as a table in the header (inputs, database,
            thresholds), in the order given.
        seqlet_counts: track -> {count name -> value}, shown per track in the order the names first
            appear: the motifs job's ``{"pos": 1200, "neg": 300, "pos_in_patterns": 900,
            "neg_in_patterns": 120}`` (headers :data:`COUNT_LABELS`; another name is shown with
            ``_`` as a space); the number of patterns of each sign is added from ``patterns``.
    """
    columns = list(dict.fromkeys([*tracks, *(p.track for p in patterns)]))
    ordered = sorted(patterns, key=lambda p: (columns.index(p.track), p.sign != "pos", p.index, p.name))
    anchors = {id(p): f"pattern-{i}" for i, p in enumerate(ordered)}
    logos = _draw_logos(ordered)

    parts = [head(title, _STYLE), f"<h1>{escape(title)}</h1>", settings_table(settings)]
    if logos is None:
        parts.append(f'<p class="note">Logos not drawn: matplotlib or logomaker is not installed '
                     f'({escape(PLOTS_EXTRA)}).</p>')
    if not patterns:
        parts.append('<p class="empty">No patterns: TF-MoDISco found no pattern in any track, so there is '
                     'nothing to match. The seqlet counts below say whether any seqlets were found.</p>')
    else:
        parts.append(_cross_track_table(motif_by_track(ordered), columns, anchors))
    parts.append(_seqlet_table(columns, patterns, seqlet_counts))
    if patterns:
        parts.append(_pattern_table(ordered, anchors, logos))
    from epiformer_cli import __version__

    parts.append(f'<p class="footer">epiformer {escape(__version__)} motifs</p></body>\n</html>\n')
    atomic_write_text(path, "\n".join(parts))


# ---- HTML -------------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; font-size: 14px;
       color: #1d1d1f; margin: 24px; max-width: 1400px; }
h1 { font-size: 22px; margin: 0 0 12px 0; overflow-wrap: anywhere; }
h2 { font-size: 17px; margin: 28px 0 6px 0; }
p.caption { color: #555; margin: 4px 0 8px 0; max-width: 62em; }
p.note, p.empty { background: #fff4d6; border: 1px solid #e8d08a; padding: 8px 12px; max-width: 62em; }
p.footer { color: #888; font-size: 12px; margin-top: 24px; }
table { border-collapse: collapse; }
th, td { border: 1px solid #d4d4d8; padding: 3px 8px; vertical-align: middle; overflow-wrap: break-word; }
th { background: #f4f4f5; font-weight: 600; text-align: left; }
table.settings th { width: 11em; }
table.settings td { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; max-width: 60em; }
table.heat th.track { text-align: center; font-size: 13px; }
div.name { max-width: 11em; overflow-wrap: break-word; }
th.track div.name { margin: 0 auto; }
table.patterns div.name { max-width: 8em; }
table.heat th.motif .ids, td.pattern .sub { display: block; font-weight: normal; color: #666; font-size: 11px; }
table.heat td { text-align: center; min-width: 4.5em; font-variant-numeric: tabular-nums; font-size: 15px;
                padding: 6px 8px; }
table.heat td.none { color: #c4c4c8; }
table.heat tr.first-unmatched > * { border-top: 3px solid #a1a1aa; }
table.heat span.neg { display: inline-block; padding: 0 4px; border-radius: 3px; }
table.heat a { color: inherit; text-decoration: none; }
table.counts td { text-align: right; font-variant-numeric: tabular-nums; }
table.counts td.track { text-align: left; }
table.patterns td { vertical-align: top; }
table.patterns td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.pattern { font-weight: 600; }
td.nowrap, table.patterns th { white-space: nowrap; }
td.consensus { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; max-width: 8em;
               word-break: break-all; }
td.logos { padding: 2px; }
td.logos img { display: block; }
td.matches { min-width: 12em; max-width: 20em; }
td.matches ol { margin: 0; padding-left: 1.4em; }
td.matches li { margin-bottom: 4px; }
td.matches .q { color: #555; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.matches li.named { font-weight: 600; }
td.matches li.weak { color: #777; }
span.sign-pos, span.sign-neg { padding: 1px 6px; border-radius: 3px; color: white; font-size: 12px; }
span.sign-pos { background: rgb(200, 55, 40); }
span.sign-neg { background: rgb(40, 95, 190); }
"""



def _breakable(name: str) -> str:
    """``name`` escaped, with a line-break opportunity after each ``_`` (``microglia_pos_0`` wraps at
    its parts rather than inside a word)."""
    return escape(name).replace("_", "_<wbr>")



def _tint(rgb: Tuple[int, int, int], share: float) -> Tuple[str, str]:
    """(background, text colour) of a heat-map cell holding ``share`` (0..1] of the largest cell:
    white blended towards ``rgb``, never lighter than :data:`_MIN_TINT`; white text on dark cells."""
    t = _MIN_TINT + (1.0 - _MIN_TINT) * min(max(share, 0.0), 1.0)
    r, g, b = (round(255 + (c - 255) * t) for c in rgb)
    return f"rgb({r}, {g}, {b})", ("white" if t > 0.55 else "#1d1d1f")


def _cross_track_table(rows: List[MotifRow], columns: List[str], anchors: Dict[int, str]) -> str:
    largest = max([*(v for r in rows for v in r.pos.values()), *(v for r in rows for v in r.neg.values()), 1])
    out = ['<h2 id="motifs-by-track">Which motif drives which track</h2>',
           '<p class="caption">Seqlets of the patterns named after the row\'s factor (their best database '
           f'match, at q &le; {NAMED_Q:g}), per track. Plain numbers are positive patterns (sites that raise the '
           'prediction); '
           f'<b>{MINUS}n</b>, on blue, negative ones (sites that lower it). The shade grows with the number '
           f'of seqlets (darkest: {largest:,}). Rows below the thick line are patterns without a match at '
           f'q &le; {NAMED_Q:g}. Click a number for its patterns.</p>',
           '<table class="heat" id="motif-table"><thead><tr><th>motif</th>']
    out += [f'<th class="track"><div class="name">{_breakable(track)}</div></th>' for track in columns]
    out.append("</tr></thead><tbody>")
    first_unmatched = True
    for row in rows:
        css = ""
        if not row.matched and first_unmatched:
            first_unmatched = False
            css = ' class="first-unmatched"' if row is not rows[0] else ""
        ids = ", ".join(i for i in row.motif_ids if i != row.name)
        sub = f'<span class="ids">{escape(ids)}</span>' if ids else ""
        if not row.matched:
            sub = f'<span class="ids">no match with q &le; {NAMED_Q:g}</span>'
        out.append(f'<tr{css}><th class="motif"><div class="name">{_breakable(row.name)}</div>{sub}</th>')
        for track in columns:
            out.append(_heat_cell(row, track, largest, anchors))
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _heat_cell(row: MotifRow, track: str, largest: int, anchors: Dict[int, str]) -> str:
    pos, neg = row.pos.get(track), row.neg.get(track)
    if pos is None and neg is None:
        return f'<td class="none" data-track="{escape(track)}">&middot;</td>'
    members = [p for p in row.patterns if p.track == track]
    tip = "; ".join(f"{p.name}: {p.seqlets:,} seqlets" for p in members)
    target = anchors[id(max(members, key=lambda p: p.seqlets))]
    style, text = "", []
    if pos is not None:
        background, color = _tint(_POS_RGB, pos / largest)
        style = f' style="background: {background}; color: {color}"'
        text.append(f'<span class="pos">{pos:,}</span>')
    if neg is not None:
        background, color = _tint(_NEG_RGB, neg / largest)
        tint = f' style="background: {background}; color: {color}"'
        if pos is None:  # the whole cell is blue; beside a positive number, only the negative one's box
            style, tint = tint, ""
        text.append(f'<span class="neg"{tint}>{MINUS}{neg:,}</span>')
    return (f'<td data-track="{escape(track)}" title="{escape(tip)}"{style}><a href="#{target}">'
            f'{" ".join(text)}</a></td>')


#: Headers of the seqlet counts the motifs job gives (discover's SeqletCounts.as_dict); other names
#: are shown with ``_`` as a space.
COUNT_LABELS = {"pos": "positive seqlets", "neg": "negative seqlets",
                "pos_in_patterns": "positive seqlets in patterns", "neg_in_patterns": "negative seqlets in patterns"}


def _seqlet_table(columns: List[str], patterns: Sequence[Pattern],
                  seqlet_counts: Mapping[str, Mapping[str, int]]) -> str:
    rows = list(dict.fromkeys([*columns, *seqlet_counts]))
    names = list(dict.fromkeys(name for counts in seqlet_counts.values() for name in counts))
    out = ['<h2 id="seqlets">Seqlets per track</h2>',
           '<p class="caption">Seqlets TF-MoDISco found in each track\'s contributions (positive: sites that '
           'raise the prediction, negative: sites that lower it), how many of them its patterns hold, and '
           'how many patterns it found.</p>',
           '<table class="counts" id="seqlet-table"><thead><tr><th>track</th>']
    out += [f"<th>{escape(COUNT_LABELS.get(name, name.replace('_', ' ')))}</th>" for name in names]
    out.append("<th>positive patterns</th><th>negative patterns</th></tr></thead><tbody>")
    for track in rows:
        counts = seqlet_counts.get(track, {})
        out.append(f'<tr><td class="track">{_breakable(track)}</td>')
        out += [f"<td>{_number(counts.get(name))}</td>" for name in names]
        for sign in ("pos", "neg"):
            out.append(f"<td>{sum(1 for p in patterns if p.track == track and p.sign == sign):,}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _number(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    return escape(value)


def _qvalue(value: float) -> str:
    """A q-value as ``3.2e-05``; ``n/a`` when it is missing (NaN)."""
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.1e}"


def _pattern_table(ordered: Sequence[Pattern], anchors: Dict[int, str],
                   logos: Optional[Dict[int, List[Tuple[str, str]]]]) -> str:
    out = ['<h2 id="patterns">Patterns</h2>',
           '<p class="caption">Each pattern\'s logos over the columns kept for matching: the CWM '
           '(contribution-weighted matrix: mean contribution of each base, below the line where it lowers '
           'the prediction), the PWM (base frequencies scaled by information content, in bits) and the '
           'best database match on the same scale, reverse-complemented when it matched the other '
           'strand and shifted to where it aligns. q-values: TOMTOM\'s, over the whole database; a pattern is '
           f'named after its best match at q &le; {NAMED_Q:g} (bold), matches above it are grey.</p>',
           '<table class="patterns" id="pattern-table"><thead><tr><th>pattern</th><th>track</th><th>sign</th>'
           '<th>seqlets</th><th>consensus</th><th>logos</th><th>best matches</th></tr></thead><tbody>']
    for pattern in ordered:
        sign = "pos" if pattern.sign == "pos" else "neg"
        images = "".join(
            f'<img src="data:image/png;base64,{data}" width="{int(LOGO_INCHES[0] * LOGO_DPI)}" '
            f'height="{int(LOGO_INCHES[1] * LOGO_DPI)}" alt="{escape(alt)}">'
            for alt, data in (logos or {}).get(id(pattern), []))
        out.append(f'<tr id="{anchors[id(pattern)]}">'
                   f'<td class="pattern"><div class="name">{_breakable(pattern.name)}</div></td>'
                   f'<td><div class="name">{_breakable(pattern.track)}</div></td>'
                   f'<td class="nowrap"><span class="sign-{sign}">{escape(pattern.sign)}</span></td>'
                   f'<td class="num">{int(pattern.seqlets):,}</td>'
                   f'<td class="consensus">{escape(pattern.consensus())}</td>'
                   f'<td class="logos">{images}</td><td class="matches">{_matches(pattern.matches)}</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


def _matches(matches: Sequence[Match]) -> str:
    if not matches:
        return "no database match"
    items = "".join(
        f'<li class="{_match_class(m, i)}" title="p = {escape(_qvalue(m.pvalue))}, strand {escape(m.strand)}, '
        f'offset {int(m.offset)}">{escape(m.label)} <span class="q">q = {_qvalue(m.qvalue)} ({escape(m.strand)} strand)'
        f'</span></li>'
        for i, m in enumerate(matches[:3]))
    return f"<ol>{items}</ol>"


def _match_class(match: Match, rank: int) -> str:
    """``named`` for the best match a pattern is named after, ``weak`` for one above :data:`NAMED_Q`."""
    if not (match.qvalue <= NAMED_Q):  # NaN is weak too
        return "weak"
    return "named" if rank == 0 else "match"


# ---- logos ------------------------------------------------------------------------------------
def _draw_logos(patterns: Sequence[Pattern]) -> Optional[Dict[int, List[Tuple[str, str]]]]:
    """id(pattern) -> [(alt text, base64 PNG)] of its CWM, PWM and best-match logos; None (after one
    warning) when matplotlib or logomaker is missing."""
    if not patterns:
        return {}
    try:
        # pyplot first: logomaker imports pyplot itself, and must get the Agg backend and the
        # throw-away config folder that import_pyplot sets up.
        plt = import_pyplot()
        import logomaker
        from PIL import Image
    except ImportError as exc:
        log.warning("report logos not drawn: %s is not installed (%s)", exc.name or "matplotlib or logomaker",
                    PLOTS_EXTRA)
        return None
    letters = _unit_letters(plt, logomaker)
    out: Dict[int, List[Tuple[str, str]]] = {}
    for pattern in patterns:
        start, end = pattern.trim
        if not 0 <= start < end <= len(pattern.cwm):
            start, end = 0, len(pattern.cwm)
        length = end - start
        lo, hi = 0, length
        best = pattern.best
        if best is not None:
            # Match.offset: where the motif's first column (of its reverse complement on the - strand,
            # the orientation that aligned) falls along the trimmed pattern; the x range covers both.
            motif = information_content(match_matrix(best))
            lo, hi = min(0, int(best.offset)), max(length, int(best.offset) + len(motif))
        cwm = np.nan_to_num(np.asarray(pattern.cwm, dtype=np.float64)[start:end])
        images = [(f"CWM logo of {pattern.name}",
                   _logo_png(plt, Image, letters, cwm, 0, (lo, hi), "CWM", None)),
                  (f"PWM logo of {pattern.name}",
                   _logo_png(plt, Image, letters, information_content(pattern.ppm[start:end]), 0, (lo, hi),
                             "PWM\n(bits)", (0.0, 2.0)))]
        if best is not None:
            label = ("match" if best.qvalue <= NAMED_Q else "weak match") + (
                "\n(rev. comp.)" if best.strand == "-" else "\n(bits)")
            images.append((f"logo of {best.label}, best match of {pattern.name}",
                           _logo_png(plt, Image, letters, motif, int(best.offset), (lo, hi), label, (0.0, 2.0))))
        out[id(pattern)] = images
    return out


def _unit_letters(plt, logomaker) -> Dict[str, tuple]:
    """base -> (outline path of the letter filling the unit box [-w/2, w/2] x [0, 1], colour), as
    ``logomaker.Glyph`` makes it (bold sans, width 0.95, stretched no wider than 'E'): the outline
    does not depend on the axes, so four Glyphs serve every logo of the report."""
    from logomaker.src.colors import get_color_dict

    colors = get_color_dict("classic", _BASES)
    fig = plt.figure()
    try:
        ax = fig.add_subplot()
        return {base: (logomaker.Glyph(0, base, floor=0.0, ceiling=1.0, ax=ax, width=_GLYPH_WIDTH).patch.get_path(),
                       tuple(float(x) for x in colors[base]))
                for base in _BASES}
    finally:
        plt.close(fig)


def stack(heights: np.ndarray) -> np.ndarray:
    """(L, 4) floors of the letters of a logo of ``heights`` (L, 4), as ``logomaker.Logo`` stacks
    them (``big_on_top``, no gaps): in each column the letters in ascending order of their signed
    height, from the column's summed negative heights up, so that the positive ones stand on 0
    (smallest nearest it) and the negative ones hang below it (largest at the bottom); a letter
    spans ``[floor, floor + |height|]``. Ties are broken as logomaker breaks them (``np.argsort``)."""
    heights = np.asarray(heights, dtype=np.float64)
    floors = np.zeros_like(heights)
    for i, row in enumerate(heights):
        floor = float(row[row < 0].sum())
        for b in np.argsort(row):
            floors[i, b] = floor
            floor += abs(row[b])
    return floors


def _logo_png(plt, image_module, letters, heights: np.ndarray, origin: int, extent: Tuple[int, int],
              ylabel: str, ylim: Optional[Tuple[float, float]]) -> str:
    """Base64 PNG of a logo of ``heights`` (L, 4), column ``i`` drawn at x = ``origin + i``, the x axis
    spanning columns ``extent`` = [lo, hi) so that logos of one pattern line up; letters drawn as
    logomaker's ``Logo(..., flip_below=False)`` draws them (negative letters hang upright below 0)
    but as one compound path per base: 4 patches instead of 4 x L Glyphs, a tenth of the time."""
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path as MplPath

    heights = np.asarray(heights, dtype=np.float64)
    floors = stack(heights)
    fig = plt.figure(figsize=LOGO_INCHES, dpi=LOGO_DPI)
    try:
        ax = fig.add_axes(_AXES_RECT)
        for b, base in enumerate(_BASES):
            where = np.flatnonzero(heights[:, b] != 0)
            if where.size == 0:
                continue
            unit, color = letters[base]
            size = np.abs(heights[where, b])
            scale = np.stack([np.ones_like(size), size], axis=1)
            shift = np.stack([origin + where.astype(np.float64), floors[where, b]], axis=1)
            vertices = unit.vertices[None, :, :] * scale[:, None, :] + shift[:, None, :]
            ax.add_artist(PathPatch(MplPath(vertices.reshape(-1, 2), np.tile(unit.codes, where.size)),
                                    facecolor=color, edgecolor="none", linewidth=0))
        ax.axhline(0.0, color="black", linewidth=0.5, zorder=-1)
        ax.set_xlim(extent[0] - 0.5, extent[1] - 0.5)
        if ylim is None:
            low = min(0.0, float(floors.min(initial=0.0)))
            high = max(0.0, float((floors + np.abs(heights)).max(initial=0.0)))
            ylim = (low, high) if high > low else (-1.0, 1.0)
        ax.set_ylim(*ylim)
        ax.set_xticks([])
        ax.tick_params(axis="y", labelsize=6, length=2, pad=1)
        ax.set_ylabel(ylabel, fontsize=7, labelpad=2)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        fig.canvas.draw()
        rgba = np.asarray(fig.canvas.buffer_rgba())
        picture = image_module.fromarray(np.ascontiguousarray(rgba[:, :, :3])).quantize(colors=_PALETTE_COLORS)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG", optimize=True)
    finally:
        plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
