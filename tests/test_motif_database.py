"""Motif databases: the strict MEME reader (one line per defect), the writer's exact round trip,
JASPAR CORE vertebrates from pyjaspar's own sqlite file, and a motifs output folder."""

from __future__ import annotations

import gzip
import io

import numpy as np
import pytest

from epiformer_cli.errors import InputFileError
from epiformer_cli.motifs import database
from epiformer_cli.motifs.database import Motif, load_motif_db, meme_text, read_meme, write_meme

HEAD = ("MEME version 4\n\nALPHABET= ACGT\n\nstrands: + -\n\n"
        "Background letter frequencies\nA 0.25 C 0.25 G 0.25 T 0.25\n\n")
MATRIX = "letter-probability matrix: alength= 4 w= 3 nsites= 20 E= 0\n"
ROWS = "0.7 0.1 0.1 0.1\n0.25 0.25 0.25 0.25\n0 0 0 1\n"
FIX = "(a MEME motif file: see https://meme-suite.org/meme/doc/meme-format.html)"


def write(tmp_path, text, name="x.meme"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reads_minimal_meme_with_ids_names_and_rows(tmp_path):
    text = (HEAD + "MOTIF MA0001.1 AGL3\n" + MATRIX + ROWS + "URL http://jaspar.genereg.net\n\nMOTIF bare\n"
            + MATRIX + ROWS)
    motifs = read_meme(write(tmp_path, text))
    assert [(m.motif_id, m.name, m.label) for m in motifs] == [("MA0001.1", "AGL3", "MA0001.1 (AGL3)"),
                                                                ("bare", "", "bare")]
    assert motifs[0].pwm.shape == (4, 3) and motifs[0].pwm.dtype == np.float64
    assert motifs[0].pwm[:, 0].tolist() == [0.7, 0.1, 0.1, 0.1] and motifs[0].pwm[:, 2].tolist() == [0, 0, 0, 1]
    assert motifs[0].nsites == 20


def test_full_meme_output_skips_log_odds_and_normalises_rounded_rows(tmp_path):
    text = ("MEME version 5.5.0\n\nALPHABET= ACGT\n\nMOTIF ACGT MEME-1 width =   2  sites =   7  E-value = 1e-5\n\n"
            "log-odds matrix: alength= 4 w= 2 n= 100 bayes= 1 E= 1e-5\n 1.2 -3 0.1 0.2\n 1 1 1 1\n\n"
            "letter-probability matrix: alength= 4 w= 2 nsites= 7 E= 1e-5\n 0.334 0.333 0.333 0.004\n"
            " 0.5 0.5 0 0\n")
    [motif] = read_meme(write(tmp_path, text))
    assert motif.motif_id == "ACGT" and motif.name == "MEME-1"
    assert motif.pwm[:, 0] == pytest.approx(np.array([0.334, 0.333, 0.333, 0.004]) / 1.004, abs=0)
    assert motif.pwm[:, 0].sum() == pytest.approx(1.0, abs=1e-15) and motif.pwm[:, 1].tolist() == [0.5, 0.5, 0, 0]


def test_custom_dna_alphabet_block_is_accepted(tmp_path):
    alphabet = ('ALPHABET "DNA" DNA-LIKE\nA "Adenine" CC0000 ~ T "Thymine" 008000\n'
                'C "Cytosine" 0000CC ~ G "Guanine" FFB300\nN = ACGT\nEND ALPHABET\n\n')
    [motif] = read_meme(write(tmp_path, "MEME version 5\n\n" + alphabet + "MOTIF m\n" + MATRIX + ROWS))
    assert motif.pwm.shape == (4, 3)


def test_gzip_is_read(tmp_path):
    path = tmp_path / "x.meme.gz"
    path.write_bytes(gzip.compress((HEAD + "MOTIF m n\n" + MATRIX + ROWS).encode()))
    assert read_meme(path)[0].label == "m (n)"


# Each defect: the file's text and the one line it gets (the file name is added in the test).
DEFECTS = {
    "three numbers": (HEAD + "MOTIF m\n" + MATRIX + "0.7 0.1 0.2\n",
                      "line 12: expected 4 probabilities, found 3 " + FIX),
    "not a number": (HEAD + "MOTIF m\n" + MATRIX + "0.7 0.1 x 0.1\n", "line 12: 'x' is not a number " + FIX),
    "negative": (HEAD + "MOTIF m\n" + MATRIX + "1.1 -0.1 0 0\n",
                 "line 12: probabilities must be finite and >= 0, found 1.1 -0.1 0 0 " + FIX),
    "sum": (HEAD + "MOTIF m\n" + MATRIX + "0.5 0.1 0.1 0.1\n",
            "line 12: probabilities sum to 0.8, not 1 (a row holds the A, C, G, T frequencies of one position; "
            "a MEME motif file: see https://meme-suite.org/meme/doc/meme-format.html)"),
    "short matrix": (HEAD + "MOTIF m\n" + MATRIX + "0.7 0.1 0.1 0.1\n\nMOTIF n\n" + MATRIX + ROWS,
                     "line 13: expected 3 rows of the matrix, found 1 and then the end of the motif " + FIX),
    "short at the end": (HEAD + "MOTIF m\n" + MATRIX + "0.7 0.1 0.1 0.1\n",
                         "line 12: expected 3 rows of the matrix, found 1 before the end of the file " + FIX),
    "RNA": (HEAD.replace("ACGT", "ACGU") + "MOTIF m\n" + MATRIX + ROWS,
            "line 3: alphabet ACGU is not DNA (ACGT) (epiformer scans DNA motifs)"),
    "protein": (HEAD + "MOTIF m\n" + MATRIX.replace("alength= 4", "alength= 20") + ROWS,
                "line 11: alength= 20: a DNA motif has 4 letters (epiformer scans DNA motifs)"),
    "bad width": (HEAD + "MOTIF m\n" + MATRIX.replace("w= 3", "w= 0") + ROWS,
                  "line 11: w= 0 is not a positive number of positions " + FIX),
    "duplicate": (HEAD + "MOTIF m a\n" + MATRIX + ROWS + "MOTIF m b\n" + MATRIX + ROWS,
                  "line 15: motif id m repeats the one of line 10 (give every motif its own id)"),
    "no matrix": (HEAD + "MOTIF m\n\nMOTIF n\n" + MATRIX + ROWS,
                  "line 10: motif m has no letter-probability matrix before line 12 " + FIX),
    "no motif": (HEAD, ": no motif in the file (no MOTIF with a letter-probability matrix) " + FIX),
    "not MEME": (">chr1\nACGT\n", ": no MEME version line and no motif: not a MEME motif file " + FIX),
    "no version": ("MOTIF m\n" + MATRIX + ROWS, "line 1: MOTIF before the MEME version line (a MEME motif file "
                                                "starts with `MEME version 4`: see "
                                                "https://meme-suite.org/meme/doc/meme-format.html)"),
    "matrix first": (HEAD + MATRIX + ROWS, "line 10: letter-probability matrix before any MOTIF line " + FIX),
}


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_every_defect_is_one_line_naming_file_line_and_fix(tmp_path, defect):
    text, expected = DEFECTS[defect]
    path = write(tmp_path, text)
    with pytest.raises(InputFileError) as caught:
        read_meme(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message == f"{path} {expected}" if expected.startswith("line") else message == f"{path}{expected}"


def test_binary_non_utf8_and_damaged_gzip_are_one_line_each(tmp_path):
    binary = tmp_path / "b.meme"
    binary.write_bytes(b"MEME version 4\n\x00\x01\x02")
    latin = tmp_path / "l.meme"
    latin.write_bytes((HEAD + "MOTIF m caf").encode() + b"\xe9\n" + (MATRIX + ROWS).encode())
    cut = tmp_path / "c.meme.gz"
    cut.write_bytes(gzip.compress((HEAD + "MOTIF m\n" + MATRIX + ROWS).encode())[:30])
    messages = {}
    for path in (binary, latin, cut):
        with pytest.raises(InputFileError) as caught:
            read_meme(path)
        messages[path.name] = str(caught.value)
        assert "\n" not in messages[path.name]
    assert messages["b.meme"] == f"{binary}: a binary file, not MEME motif text {FIX}"
    assert messages["l.meme"] == (f"{latin} line 10: not UTF-8 text (byte 0xe9) (save it as UTF-8 or ASCII, a MEME "
                                  "motif file: see https://meme-suite.org/meme/doc/meme-format.html)")
    assert messages["c.meme.gz"].startswith(f"{cut}: not a readable gzip file (")
    assert messages["c.meme.gz"].endswith("(the file is cut short or damaged: copy or make it again)")


def test_missing_file_and_folder_without_patterns_are_one_line(tmp_path):
    with pytest.raises(InputFileError, match=r"^.*nope\.meme: motif file not found: give a MEME file or the --out "
                                             r"folder of epiformer motifs$"):
        load_motif_db(tmp_path / "nope.meme")
    with pytest.raises(InputFileError) as caught:
        load_motif_db(tmp_path)
    assert str(caught.value) == (f"{tmp_path} is not a motifs output folder (no patterns.meme): give a MEME file or "
                                 "the --out folder of epiformer motifs")


def _random_motifs(seed=0, n=60):
    rng = np.random.default_rng(seed)
    return [Motif(f"r{i}", f"F{i}" if i % 2 else "", rng.dirichlet([0.3] * 4, size=int(rng.integers(1, 25))).T,
                  nsites=float(rng.integers(5, 500)) if i % 3 else None) for i in range(n)]


def test_write_then_read_gives_every_value_rounded_to_6_significant_digits_exactly(tmp_path):
    motifs = _random_motifs()
    write_meme(tmp_path / "r.meme", motifs)
    back = read_meme(tmp_path / "r.meme")
    six = np.vectorize(lambda v: float(f"{v:.6g}"))
    assert [(m.motif_id, m.name, m.length) for m in back] == [(m.motif_id, m.name, m.length) for m in motifs]
    for before, after in zip(motifs, back):
        assert np.array_equal(after.pwm, six(before.pwm))  # exactly, not approximately
        assert np.abs(after.pwm.sum(axis=0) - 1).max() < 5e-6
    # and what was read writes the same text again
    assert meme_text(back) == (tmp_path / "r.meme").read_text()
    assert [m.nsites for m in back] == [m.nsites if m.nsites else 20 for m in motifs]


def test_write_meme_is_atomic_takes_handles_and_gzip_and_memelite_reads_it(tmp_path):
    memelite_io = pytest.importorskip("memelite.io")
    motifs = _random_motifs(1, 5)
    handle = io.StringIO()
    write_meme(handle, motifs)
    write_meme(tmp_path / "m.meme", motifs)
    write_meme(tmp_path / "m.meme.gz", motifs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.meme", "m.meme.gz"]  # no temporary left
    assert (tmp_path / "m.meme").read_text() == handle.getvalue() == gzip.decompress(
        (tmp_path / "m.meme.gz").read_bytes()).decode()
    theirs = memelite_io.read_meme(str(tmp_path / "m.meme"))
    assert list(theirs) == [f"{m.motif_id} {m.name}".strip() for m in motifs]
    for m, pwm in zip(read_meme(tmp_path / "m.meme.gz"), theirs.values()):
        assert np.array_equal(m.pwm, pwm)  # the same numbers memelite scores


def test_a_name_of_several_words_is_written_as_one(tmp_path):
    write_meme(tmp_path / "one.meme", [Motif("m", "FOS JUN", np.full((4, 2), 0.25))])
    assert read_meme(tmp_path / "one.meme")[0].label == "m (FOS_JUN)"


def test_write_refuses_what_meme_cannot_hold():
    with pytest.raises(ValueError, match="one word"):
        meme_text([Motif("two words", "", np.full((4, 2), 0.25))])
    with pytest.raises(ValueError, match=r"\(4, L\)"):
        meme_text([Motif("m", "", np.full((3, 2), 0.25))])


# ---- JASPAR ---------------------------------------------------------------------------------------
def test_jaspar_vertebrates_is_the_newest_release_latest_versions_without_pseudocounts():
    pyjaspar = pytest.importorskip("pyjaspar")
    motifs = database.jaspar_vertebrates()
    release = database.jaspar_release()
    assert release == f"{pyjaspar.JASPAR_LATEST_RELEASE} CORE vertebrates, {len(motifs)} motifs"
    assert database.JASPAR_RELEASE == release
    assert len(motifs) > 800
    ids = [m.motif_id for m in motifs]
    assert len(set(ids)) == len(ids) and len({i.split(".")[0] for i in ids}) == len(ids)  # one version per matrix
    by_name = {}
    for m in motifs:
        by_name.setdefault(m.name, []).append(m)
        assert m.pwm.shape[0] == 4 and np.allclose(m.pwm.sum(axis=0), 1, atol=1e-12)
    assert "CTCF" in by_name and "FOS::JUN" in by_name
    # probabilities are the counts over their column totals, nothing added
    jdb = pyjaspar.jaspardb(release=pyjaspar.JASPAR_LATEST_RELEASE)
    ctcf = by_name["CTCF"][0]
    counts = np.array([jdb.fetch_motif_by_id(ctcf.motif_id).counts[b] for b in "ACGT"], dtype=float)
    assert np.array_equal(ctcf.pwm, counts / counts.sum(axis=0))


def test_jaspar_is_read_once_per_process():
    pytest.importorskip("pyjaspar")
    first, second = database.jaspar_vertebrates(), database.jaspar_vertebrates()
    assert first is not second and all(a is b for a, b in zip(first, second))
    db = load_motif_db(None)
    assert db.source == database.jaspar_release() and len(db.motifs) == len(first)
    # the file a run's identity records for it is pyjaspar's sqlite file; `jaspar` names it too
    assert db.path == database.jaspar_file() and db.path.is_file() and db.path.suffix == ".sqlite"
    named = load_motif_db("JASPAR")
    assert named.source == db.source and named.path == db.path and database.motif_file("jaspar") == db.path


def test_a_motifs_folder_reads_its_patterns_as_pattern_and_factor(tmp_path):
    pwm = np.full((4, 5), 0.25)
    write_meme(tmp_path / "patterns.meme", [Motif("microglia_pos_0", "SPI1", pwm), Motif("microglia_neg_0", "", pwm)])
    db = load_motif_db(tmp_path)
    assert [m.label for m in db.motifs] == ["microglia_pos_0 (SPI1)", "microglia_neg_0"]
    assert db.source == f"{tmp_path / 'patterns.meme'}, 2 TF-MoDISco patterns" and db.path == tmp_path / "patterns.meme"
    one = load_motif_db(tmp_path / "patterns.meme")
    assert one.source == f"{tmp_path / 'patterns.meme'}, 2 motifs"
