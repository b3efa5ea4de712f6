"""VCF/BCF reading: formats, stdin, allele splitting and kinds, the 1-based -> 0-based conversion."""

import io
import subprocess
import sys

import pysam
import pytest

from epiformer_cli.errors import InputFileError
from epiformer_cli.io.vcf import classify, read_vcf

HEADER = (
    "##fileformat=VCFv4.2\n##contig=<ID=chr1,length=1000>\n"
    "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
)
BODY = (
    "chr1\t10\trs1\tA\tC,<DEL>,*\t.\t.\t.\n"
    "chr1\t5\t.\tac\tA\t.\t.\t.\n"
    "chr1\t7\t.\tG\t.\t.\t.\t.\n"
    "chr1\t8\t.\tG\tGTT\t.\t.\t.\n"
    "chr1\t9\t.\tG\tR\t.\t.\t.\n"
    "chr1\t20\tbnd\tG\tG]chr1:30]\t.\t.\t.\n"
)


def write_vcf(path, body=BODY):
    path.write_text(HEADER + body)
    return path


def alleles(path):
    with read_vcf(path) as reader:
        return [a for record in reader.records() for a in record.alleles]


def test_split_and_classify(tmp_path):
    got = alleles(write_vcf(tmp_path / "a.vcf"))
    assert [(a.record, a.allele, a.alt, a.kind) for a in got] == [
        (0, 1, "C", "snv"), (0, 2, "<DEL>", "symbolic"), (0, 3, "*", "symbolic"),
        (1, 1, "A", "indel"), (2, 0, ".", "none"), (3, 1, "GTT", "indel"), (4, 1, "R", "invalid"),
        (5, 1, "G]chr1:30]", "symbolic"),
    ]
    first = got[0]
    assert (first.pos, first.start, first.end) == (10, 9, 10)  # POS 10 is 0-based [9, 10)
    deletion = got[3]
    assert (deletion.ref, deletion.start, deletion.end) == ("AC", 4, 6)
    assert "lowercase" in deletion.flags


def test_classify():
    assert classify("A", "G") == "snv"
    assert classify("AC", "GT") == "substitution"
    assert classify("A", "AT") == "indel"
    assert classify("A", "<INS>") == "symbolic"
    assert classify("A", ".") == "none"
    assert classify("N", "A") == "snv"


def test_bgzip_tabix_and_bcf_read_the_same(tmp_path):
    plain = write_vcf(tmp_path / "a.vcf")
    expected = [(a.chrom, a.start, a.ref, a.alt) for a in alleles(plain)]
    sorted_vcf = write_vcf(tmp_path / "s.vcf", "".join(sorted(BODY.splitlines(True), key=lambda l: int(l.split("\t")[1]))))
    gz = pysam.tabix_index(str(sorted_vcf), preset="vcf", force=True)
    assert sorted(expected) == sorted((a.chrom, a.start, a.ref, a.alt) for a in alleles(gz))
    simple = write_vcf(tmp_path / "simple.vcf", "chr1\t10\trs1\tA\tC,G\t.\t.\t.\nchr1\t8\t.\tG\tGTT\t.\t.\t.\n")
    expected = [(a.chrom, a.start, a.ref, a.alt) for a in alleles(simple)]
    bcf = tmp_path / "a.bcf"
    with pysam.VariantFile(str(simple)) as src, pysam.VariantFile(str(bcf), "wb", header=src.header) as dst:
        for rec in src:
            dst.write(rec)
    assert expected == [(a.chrom, a.start, a.ref, a.alt) for a in alleles(bcf)]


def test_stdin_spooled_when_not_a_file_descriptor(tmp_path, monkeypatch):
    data = (HEADER + BODY).encode()

    class FakeStdin(io.TextIOWrapper):
        def fileno(self):
            raise io.UnsupportedOperation("no fd")

    monkeypatch.setattr(sys, "stdin", FakeStdin(io.BytesIO(data)))
    assert len(alleles("-")) == 8


def test_stdin_real_file_descriptor(tmp_path):
    code = "from epiformer_cli.io.vcf import read_vcf\nr = read_vcf('-')\nprint(sum(len(x.alleles) for x in r.records()))"
    out = subprocess.run([sys.executable, "-c", code], input=HEADER + BODY, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "8"


def test_header_text_adds_lines(tmp_path):
    with read_vcf(write_vcf(tmp_path / "a.vcf")) as reader:
        text = reader.header_text([("EPI_X", "A", "Float", "x")], [("epiformer_version", "9")])
    assert "##INFO=<ID=EPI_X,Number=A,Type=Float" in text and "##epiformer_version=9" in text
    assert text.rstrip().splitlines()[-1].startswith("#CHROM")


def test_bad_inputs_are_one_line_errors(tmp_path):
    (tmp_path / "nohead.vcf").write_text("chr1\t10\t.\tA\tC\t.\t.\t.\n")
    with pytest.raises(InputFileError, match="##fileformat"):
        read_vcf(tmp_path / "nohead.vcf")
    with pytest.raises(InputFileError, match="not found"):
        read_vcf(tmp_path / "missing.vcf")
    bad = write_vcf(tmp_path / "bad.vcf", "chr1\t10\t.\tA\tC\t.\t.\t.\nchr1\tabc\t.\tA\tC\t.\t.\t.\n")
    with pytest.raises(InputFileError, match="malformed VCF line after record 1"):
        alleles(bad)


def test_undeclared_contig_is_read(tmp_path):
    got = alleles(write_vcf(tmp_path / "a.vcf", "2\t10\t.\tA\tC\t.\t.\t.\n"))
    assert got[0].chrom == "2"
