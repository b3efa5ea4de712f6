"""epiformer_cli.motifs.report: report.html parses, holds one embedded PNG per logo and no link out,
escapes every name from the user's files, its cross-track table holds the seqlets of a fixture
exactly, a run without patterns says so; the letter stacking is logomaker's; and
epiformer_cli.motifs.screenshot renders the page when Chromium is installed."""

from __future__ import annotations

import base64
import logging
import struct
from html.parser import HTMLParser

import numpy as np
import pytest

from epiformer_cli.motifs import report as report_module
from epiformer_cli.motifs import screenshot as screenshot_module
from epiformer_cli.motifs.patterns import Match, Pattern
from epiformer_cli.motifs.report import information_content, match_matrix, motif_by_track, stack, write_report
from tests.helpers import assert_imports_none_of

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HOSTILE = "<script>alert(1)</script>"
MINUS = "\u2212"


class Page(HTMLParser):
    """What a test needs of a page: every start tag with its attributes, the text of each table's
    cells by table id, and all text."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags, self.tables, self.text = [], {}, []
        self._table, self._row, self._cell = None, None, None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id") or f"table-{len(self.tables)}", [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif self._cell is not None and tag != "wbr":
            self._cell.append(" ")  # a span, link, line or list item: a word boundary

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table":
            self._table = self._row = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def attrs_of(self, tag):
        return [attrs for name, attrs in self.tags if name == tag]


def onehot_ppm(seq: str, strength: float = 0.85) -> np.ndarray:
    """(L, 4) frequencies: ``strength`` on each base of ``seq``, the rest spread evenly."""
    ppm = np.full((len(seq), 4), (1.0 - strength) / 3.0)
    ppm[np.arange(len(seq)), ["ACGT".index(b) for b in seq]] = strength
    return ppm


def match(motif_id, name, q, strand="+", offset=0, seq="CCGCGG") -> Match:
    return Match(motif_id, name, q / 100.0, q, strand, offset, onehot_ppm(seq, 0.9).T.copy())


def pattern(track, sign, index, seqlets, matches=(), seq="CCGCGGAT", name=None) -> Pattern:
    ppm = onehot_ppm(seq)
    cwm = ppm * (0.5 if sign == "pos" else -0.5)
    return Pattern(name or f"{track}_{sign}_{index}", track, sign, index, ppm, cwm, cwm, seqlets,
                   (1, len(seq) - 1), list(matches))


def fixture_patterns():
    """t1: CTCF +100 and -120, SPI1 +7 (three matches); t2: CTCF +50 (another CTCF id, minus strand,
    offset -1), one pattern without a match (+30) and one whose best match has q > 0.05 (-11);
    t3: nothing."""
    return [
        pattern("t1", "pos", 0, 100, [match("MA0139.2", "CTCF", 3.2e-5)]),
        pattern("t1", "neg", 0, 120, [match("MA0139.2", "CTCF", 1e-3)]),
        pattern("t1", "pos", 1, 7, [match("MA0080.7", "SPI1", 4.56e-3), match("MA0466.3", "CEBPB", 0.0123),
                                    match("MA0099.4", "", 0.0456)]),
        pattern("t2", "pos", 0, 50, [match("MA0139.1", "CTCF", 2e-4, strand="-", offset=-1, seq="AACCGCGGTT")]),
        pattern("t2", "pos", 1, 30),
        pattern("t2", "neg", 0, 11, [match("MA9999.1", "WEAK", 0.3)]),
    ]


COUNTS = {"t1": {"pos": 1500, "neg": 300, "pos_in_patterns": 107, "neg_in_patterns": 120},
          "t2": {"pos": 900, "neg": 40, "pos_in_patterns": 80, "neg_in_patterns": 11},
          "t3": {"pos": 12, "neg": 4, "pos_in_patterns": 0, "neg_in_patterns": 0}}


def write(tmp_path, patterns, tracks=("t1", "t2", "t3"), counts=COUNTS, settings=None, title="motifs"):
    path = tmp_path / "report.html"
    write_report(path, patterns, list(tracks), title=title,
                 settings=settings if settings is not None else {"database": "JASPAR2024", "tracks": "t1, t2, t3"},
                 seqlet_counts=counts)
    text = path.read_text(encoding="utf-8")
    return text, Page(text)


def test_cross_track_table_holds_the_seqlets_of_each_motif_and_track(tmp_path):
    text, page = write(tmp_path, fixture_patterns())
    assert page.tables["motif-table"] == [
        ["motif", "t1", "t2", "t3"],
        ["CTCF MA0139.2, MA0139.1", f"100 {MINUS}120", "50", "·"],
        ["SPI1 MA0080.7", "7", "·", "·"],
        ["t2_pos_1 no match with q ≤ 0.05", "·", "30", "·"],
        ["t2_neg_0 no match with q ≤ 0.05", "·", f"{MINUS}11", "·"],
    ]
    rows = motif_by_track(fixture_patterns())
    assert [(r.name, r.matched, r.pos, r.neg) for r in rows] == [
        ("CTCF", True, {"t1": 100, "t2": 50}, {"t1": 120}),
        ("SPI1", True, {"t1": 7}, {}),
        ("t2_pos_1", False, {"t2": 30}, {}),
        ("t2_neg_0", False, {}, {"t2": 11}),
    ]
    # the largest cell is the darkest, an empty one has no colour
    cells = {attrs.get("title"): attrs.get("style") for attrs in page.attrs_of("td") if "data-track" in attrs}
    assert cells["t1_pos_0: 100 seqlets; t1_neg_0: 120 seqlets"].startswith("background: rgb(")
    assert cells[None] is None


def test_seqlet_table_and_pattern_rows(tmp_path):
    text, page = write(tmp_path, fixture_patterns())
    assert page.tables["seqlet-table"] == [
        ["track", "positive seqlets", "negative seqlets", "positive seqlets in patterns",
         "negative seqlets in patterns", "positive patterns", "negative patterns"],
        ["t1", "1,500", "300", "107", "120", "2", "1"],
        ["t2", "900", "40", "80", "11", "2", "1"],
        ["t3", "12", "4", "0", "0", "0", "0"],
    ]
    rows = page.tables["pattern-table"]
    assert [row[:5] for row in rows] == [
        ["pattern", "track", "sign", "seqlets", "consensus"],
        ["t1_pos_0", "t1", "pos", "100", "CGCGGA"],
        ["t1_pos_1", "t1", "pos", "7", "CGCGGA"],
        ["t1_neg_0", "t1", "neg", "120", "CGCGGA"],
        ["t2_pos_0", "t2", "pos", "50", "CGCGGA"],
        ["t2_pos_1", "t2", "pos", "30", "CGCGGA"],
        ["t2_neg_0", "t2", "neg", "11", "CGCGGA"],
    ]
    assert rows[2][6] == ("MA0080.7 (SPI1) q = 4.6e-03 (+ strand) MA0466.3 (CEBPB) q = 1.2e-02 (+ strand) "
                          "MA0099.4 q = 4.6e-02 (+ strand)")
    assert rows[1][6] == "MA0139.2 (CTCF) q = 3.2e-05 (+ strand)"
    assert rows[5][6] == "no database match"
    assert rows[6][6] == "MA9999.1 (WEAK) q = 3.0e-01 (+ strand)"
    classes = [attrs["class"] for attrs in page.attrs_of("li")]
    assert classes == ["named", "named", "match", "match", "named", "named", "weak"]
    # every link of the cross-track table leads to a pattern row of the page
    ids = {attrs["id"] for _, attrs in page.tags if "id" in attrs}
    hrefs = [attrs["href"] for attrs in page.attrs_of("a")]
    assert hrefs and all(h.startswith("#") and h[1:] in ids for h in hrefs)


def test_one_embedded_png_per_logo_and_nothing_fetched(tmp_path):
    patterns = fixture_patterns()
    text, page = write(tmp_path, patterns)
    images = page.attrs_of("img")
    # CWM and PWM of each pattern, and the best match of the 5 that have one
    assert len(images) == 2 * len(patterns) + 5
    for attrs in images:
        assert attrs["src"].startswith("data:image/png;base64,")
        data = base64.b64decode(attrs["src"].split(",", 1)[1], validate=True)
        assert data[:8] == PNG_SIGNATURE
        assert struct.unpack(">II", data[16:24]) == (400, 100)  # IHDR: every logo one size, so they align
    for _, attrs in page.tags:
        for key in ("src", "href", "action", "data", "srcset", "poster"):
            value = attrs.get(key) or ""
            assert not value.lower().startswith(("http://", "https://", "//", "file:")), (key, value)
    assert not [tag for tag, _ in page.tags if tag in ("script", "link", "iframe", "object", "embed")]
    assert "default-src 'none'" in text
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temporary file left
    (tmp_path / "again").mkdir()
    assert write(tmp_path / "again", patterns)[0] == text  # the same run gives the same bytes


def test_hostile_names_are_text(tmp_path):
    patterns = [pattern(HOSTILE, "pos", 0, 9, [match(f"MA1{HOSTILE}", f"N{HOSTILE}", 1e-4)], name=f"p{HOSTILE}"),
                pattern("t'\"&", "neg", 0, 3)]
    settings = {f"k{HOSTILE}": f"v{HOSTILE}", "quote": '"><img src=x onerror=alert(1)>'}
    text, page = write(tmp_path, patterns, tracks=[HOSTILE, "t'\"&"], settings=settings,
                       counts={HOSTILE: {f"c{HOSTILE}": 1}}, title=f"T{HOSTILE}")
    assert "<script" not in text.lower()
    assert not [tag for tag, _ in page.tags if tag == "script"]
    assert not [attrs for _, attrs in page.tags if "onerror" in attrs]
    assert all(attrs["src"].startswith("data:image/png;base64,") for attrs in page.attrs_of("img"))
    shown = "".join(page.text)
    for name in (f"T{HOSTILE}", f"p{HOSTILE}", f"MA1{HOSTILE} (N{HOSTILE})", f"k{HOSTILE}", f"v{HOSTILE}",
                 f"c{HOSTILE}", '"><img src=x onerror=alert(1)>', "t'\"&"):
        assert name in shown, name
    assert page.tables["motif-table"][0] == ["motif", HOSTILE, "t'\"&"]
    assert page.tables["motif-table"][1][0] == f"N{HOSTILE} MA1{HOSTILE}"


def test_no_patterns_says_so(tmp_path):
    text, page = write(tmp_path, [], counts={"t1": {"pos": 0, "neg": 0}}, tracks=["t1"])
    assert "No patterns: TF-MoDISco found no pattern in any track" in "".join(page.text)
    assert page.attrs_of("img") == [] and "motif-table" not in page.tables
    assert page.tables["seqlet-table"] == [["track", "positive seqlets", "negative seqlets", "positive patterns",
                                            "negative patterns"], ["t1", "0", "0", "0", "0"]]


def test_without_plotting_libraries_the_report_has_no_logos_and_says_why(tmp_path, monkeypatch, caplog):
    def missing():
        raise ImportError("No module named 'matplotlib'", name="matplotlib")

    monkeypatch.setattr(report_module, "import_pyplot", missing)
    with caplog.at_level(logging.WARNING, logger="epiformer_cli.motifs.report"):
        text, page = write(tmp_path, fixture_patterns())
    assert page.attrs_of("img") == []
    assert "Logos not drawn: matplotlib or logomaker is not installed (pip install 'epiformer[plots]')" in "".join(
        page.text)
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
    assert page.tables["motif-table"][1][1] == f"100 {MINUS}120"


def test_information_content_and_reverse_complement():
    ppm = np.array([[1.0, 0, 0, 0], [0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_allclose(information_content(ppm),
                               [[2, 0, 0, 0], [0, 0, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 0, 0]], atol=1e-12)
    stored = np.array([[0.7, 0.1], [0.1, 0.2], [0.1, 0.3], [0.1, 0.4]])  # (4, 2): A-rich, then T-rich
    forward = Match("M", "", 0.1, 0.1, "+", 0, stored)
    np.testing.assert_array_equal(match_matrix(forward), stored.T)
    reverse = Match("M", "", 0.1, 0.1, "-", 0, stored)
    # reverse complement: column 2's T 0.4 becomes column 1's A; column 1's A 0.7 becomes column 2's T
    np.testing.assert_array_equal(match_matrix(reverse), [[0.4, 0.3, 0.2, 0.1], [0.1, 0.1, 0.1, 0.7]])


def test_letters_stack_as_logomakers():
    """stack() gives each letter the floor logomaker.Logo(..., flip_below=False) gives it."""
    pytest.importorskip("logomaker")
    import pandas as pd

    from epiformer_cli.plotting import import_pyplot

    plt = import_pyplot()
    import logomaker

    heights = np.array([[0.5, -0.2, 0.1, -0.4], [0.0, 0.3, -0.3, 0.2], [1.0, 0.0, 0.0, 0.0], [0.2, 0.2, -0.1, 0.0]])
    np.testing.assert_allclose(stack(heights)[0], [0.1, -0.2, 0.0, -0.6], atol=1e-12)
    fig, ax = plt.subplots()
    try:
        logo = logomaker.Logo(pd.DataFrame(heights, columns=list("ACGT")), ax=ax, flip_below=False)
        for i in range(len(heights)):
            for b, base in enumerate("ACGT"):
                glyph = logo.glyph_df[base][i]
                if heights[i, b] != 0:
                    assert stack(heights)[i, b] == pytest.approx(glyph.floor, abs=1e-12), (i, base)
    finally:
        plt.close(fig)


def test_import_does_not_import_matplotlib():
    assert_imports_none_of(["epiformer_cli.motifs.report", "epiformer_cli.motifs.screenshot"],
                           ["matplotlib", "logomaker", "pandas", "PIL"])


def test_screenshot_without_chromium_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(screenshot_module, "CHROMIUM_PATHS", ())
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    html = tmp_path / "report.html"
    html.write_text("<p>hi</p>")
    assert screenshot_module.screenshot(html, tmp_path / "shot.png") is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


@pytest.mark.slow
@pytest.mark.skipif(screenshot_module.find_chromium() is None, reason="Chromium is not installed")
def test_screenshot_renders_the_report(tmp_path):
    write(tmp_path, fixture_patterns()[:2])
    png = tmp_path / "shot.png"
    assert screenshot_module.screenshot(tmp_path / "report.html", png, width=640, height=480) is True
    data = png.read_bytes()
    assert data[:8] == PNG_SIGNATURE and struct.unpack(">II", data[16:24]) == (640, 480)
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("RGB"))
    # not a blank page: the title, tables and logos put dark and coloured pixels on it
    assert (pixels.min(axis=2) < 100).mean() > 0.005
