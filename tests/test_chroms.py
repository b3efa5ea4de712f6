import pytest

from epiformer_cli.errors import ChromosomeMismatchError
from epiformer_cli.io.chroms import alias_key, match_chromosomes, missing_from, resolve_name


@pytest.mark.parametrize(
    "a,b",
    [("chr1", "1"), ("chrX", "X"), ("chrY", "Y"), ("chrM", "MT"), ("chrM", "M"), ("chrMT", "MT"),
     ("chr22", "22"), ("chr1_KI270706v1_random", "1_KI270706v1_random")],
)
def test_aliases_meet(a, b):
    assert alias_key(a) == alias_key(b)


def test_different_chromosomes_do_not_meet():
    assert alias_key("chr1") != alias_key("chr11")
    assert alias_key("chr2") != alias_key("2A")


def test_exact_match_wins_over_alias():
    assert resolve_name("chr1", ["1", "chr1"]) == "chr1"
    assert resolve_name("chr1", ["1", "2"]) == "1"
    assert resolve_name("MT", ["chrM"]) == "chrM"
    assert resolve_name("chr3", ["1", "2"]) is None


def test_match_reports_renamed_and_missing():
    fasta = ["chr1", "chr2", "chrX", "chrM", "chrUn"]
    track = ["1", "2", "X", "MT"]
    cmap = match_chromosomes(fasta, track, "g.fa", "t.bw")
    assert cmap.get("chr1") == "1" and cmap.get("chrM") == "MT"
    assert cmap.renamed()["chrX"] == "X"
    assert missing_from(fasta, cmap) == ["chrUn"]


def test_no_common_names_names_both_files():
    with pytest.raises(ChromosomeMismatchError) as err:
        match_chromosomes(["chr1", "chr2"], ["NC_000001.11", "NC_000002.12"], "hg38.fa", "cons.bw")
    message = str(err.value)
    assert "hg38.fa" in message and "cons.bw" in message
    assert "chr1" in message and "NC_000001.11" in message
