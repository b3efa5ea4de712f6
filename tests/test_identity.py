"""Input identities (epiformer_cli/io/identity.py): a SHA-256 of every byte, no name, hashed once per
version of a file and cached by its stamp; and the score-variants null that must not outlive a
changed genome."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from epiformer_cli.errors import UsageError
from epiformer_cli.io import identity
from epiformer_cli.io.identity import cache_dir, file_identity, sha256_file
from epiformer_cli.model.modelfile import save_model
from epiformer_cli.variants.null import read_null_key
from tests.helpers import other, read_only_folder, score, sensitive_model, write_bigwig, write_fasta

MiB = 1 << 20
HOUR_NS = 3600 * 10**9


def _bytes(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def _aged(path, hours: float = 1.0):
    """Give ``path`` an mtime ``hours`` ago: a file lying around, past the settling time."""
    past = time.time_ns() - int(hours * HOUR_NS)
    os.utime(path, ns=(past, past))
    return path


def _old_file(path, data: bytes):
    """``path`` holding ``data``, last modified an hour ago."""
    path.write_bytes(data)
    return _aged(path)


def _ends_only(path) -> str:
    """The identity before issue 21: a SHA-256 of the first and last MiB only."""
    data = path.read_bytes()
    return hashlib.sha256(data[:MiB] + (data[-MiB:] if len(data) > 2 * MiB else b"")).hexdigest()


@pytest.fixture
def hashed(monkeypatch):
    """Count the whole-file hashes (each one a read of every byte), and cache files from 1 MiB."""
    calls = []
    real = identity._hash
    monkeypatch.setattr(identity, "_hash", lambda path: (calls.append(path), real(path))[1])
    monkeypatch.setattr(identity, "CACHED_FROM_BYTES", MiB)
    return calls


def _entries():
    return sorted((cache_dir() / "identity").glob("*.json")) if (cache_dir() / "identity").is_dir() else []


# ---- what an identity is -------------------------------------------------------------------------
def test_the_identity_is_size_and_sha256_of_every_byte(tmp_path):
    data = _bytes(3 * MiB + 17)
    path = tmp_path / "g.fa"
    path.write_bytes(data)
    assert file_identity(path) == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert file_identity(empty) == {"size": 0, "sha256": hashlib.sha256(b"").hexdigest()}


def test_same_size_with_the_middle_changed_is_another_input(tmp_path):
    data = bytearray(_bytes(3 * MiB))
    path = tmp_path / "g.fa"
    path.write_bytes(data)
    before = file_identity(path)
    middle = len(data) // 2
    data[middle - 82_000 : middle + 82_000] = _bytes(164_000, seed=1)  # 164 kB, none of the first or last MiB
    path.write_bytes(data)
    after = file_identity(path)
    assert after["size"] == before["size"] and after["sha256"] != before["sha256"]
    assert after["sha256"] == hashlib.sha256(data).hexdigest()


def test_the_same_content_under_another_name_is_the_same_input(tmp_path):
    data = _bytes(2 * MiB + 5)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "hg38.fa").write_bytes(data)
    (tmp_path / "b" / "genome_copy.fasta").write_bytes(data)
    assert file_identity(tmp_path / "a" / "hg38.fa") == file_identity(tmp_path / "b" / "genome_copy.fasta")


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 3 * 4096 + 1])
def test_hashing_across_block_boundaries(tmp_path, monkeypatch, size):
    monkeypatch.setattr(identity, "HASH_BLOCK", 4096)
    data = _bytes(size, seed=size)
    (tmp_path / "f").write_bytes(data)
    assert identity._hash(tmp_path / "f") == (size, hashlib.sha256(data).hexdigest())


# ---- the cache ---------------------------------------------------------------------------------
def test_a_cache_hit_does_not_read_the_file(tmp_path, hashed):
    path = _old_file(tmp_path / "g.fa", _bytes(2 * MiB))
    first = file_identity(path)
    assert len(hashed) == 1 and len(_entries()) == 1
    entry = json.loads(_entries()[0].read_text())
    st = path.stat()
    assert entry["stamp"] == {"path": str(path.resolve()), "dev": st.st_dev, "ino": st.st_ino, "size": st.st_size,
                              "mtime_ns": st.st_mtime_ns}
    assert file_identity(path) == first and sha256_file(path) == first["sha256"]
    # through a symlink too: the resolved path is the key
    (tmp_path / "link.fa").symlink_to(path)
    assert file_identity(tmp_path / "link.fa") == first
    assert len(hashed) == 1 and len(_entries()) == 1


def test_touching_the_file_hashes_it_again(tmp_path, hashed):
    path = tmp_path / "g.fa"
    path.write_bytes(_bytes(2 * MiB))
    _aged(path, hours=2)
    first = file_identity(path)
    _aged(path, hours=1)  # `touch -d`: content as it was, another mtime
    assert file_identity(path) == first and len(hashed) == 2
    assert file_identity(path) == first and len(hashed) == 2  # cached again, for the new mtime
    assert len(_entries()) == 1  # one entry per path: the new version replaced the old


def test_a_file_replaced_under_the_same_stamp_but_another_inode_misses(tmp_path, hashed):
    path = tmp_path / "g.fa"
    path.write_bytes(_bytes(2 * MiB))
    _aged(path)
    st = path.stat()
    file_identity(path)
    new = tmp_path / "new.fa"
    new.write_bytes(_bytes(2 * MiB, seed=2))
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime (`cp -p`, rsync -t)
    os.replace(new, path)
    assert file_identity(path)["sha256"] == hashlib.sha256(_bytes(2 * MiB, seed=2)).hexdigest()
    assert len(hashed) == 2


def test_a_file_modified_just_now_is_hashed_but_not_cached(tmp_path, hashed):
    """Within a coarse filesystem clock's tick a second write keeps the mtime: such a stamp is not trusted."""
    path = tmp_path / "g.fa"
    path.write_bytes(_bytes(2 * MiB))
    file_identity(path)
    file_identity(path)
    assert len(hashed) == 2 and _entries() == []


def test_small_files_are_not_cached(tmp_path, hashed, monkeypatch):
    monkeypatch.setattr(identity, "CACHED_FROM_BYTES", 64 * MiB)  # the real threshold (`hashed` lowers it)
    path = _old_file(tmp_path / "targets.tsv", b"name\tpath\n")
    file_identity(path)
    file_identity(path)
    assert len(hashed) == 2 and _entries() == []


def test_a_corrupt_cache_entry_means_hashing_again(tmp_path, hashed):
    data = _bytes(2 * MiB)
    path = _old_file(tmp_path / "g.fa", data)
    file_identity(path)
    (entry,) = _entries()
    good, digest = entry.read_text(), hashlib.sha256(data).hexdigest()
    # not JSON; another file's stamp; not an object; a digest that is not one
    for damaged in ("{not json", json.dumps({"format": 1, "stamp": {}, "sha256": "0" * 64}), "[]",
                    good.replace(digest, "x" * 64)):
        entry.write_text(damaged)
        assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert len(hashed) == 5
    assert json.loads(entry.read_text())["sha256"] == hashlib.sha256(data).hexdigest()  # written again


def test_a_cache_folder_that_cannot_be_made_only_means_hashing(tmp_path, hashed, monkeypatch, caplog):
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("EPIFORMER_CACHE_DIR", str(tmp_path / "a_file" / "cache"))
    path = _old_file(tmp_path / "g.fa", _bytes(2 * MiB))
    with caplog.at_level(logging.DEBUG, logger="epiformer_cli.io.identity"):
        assert file_identity(path)["sha256"] == hashlib.sha256(_bytes(2 * MiB)).hexdigest()
        assert file_identity(path)["sha256"] == hashlib.sha256(_bytes(2 * MiB)).hexdigest()
    assert len(hashed) == 2 and "not written" in caplog.text


def test_a_read_only_cache_folder_only_means_hashing(tmp_path, hashed, monkeypatch):
    folder = tmp_path / "cache"
    (folder / "identity").mkdir(parents=True)
    monkeypatch.setenv("EPIFORMER_CACHE_DIR", str(folder))
    path = _old_file(tmp_path / "g.fa", _bytes(2 * MiB))
    with read_only_folder(folder / "identity"):
        assert file_identity(path)["size"] == 2 * MiB
        assert file_identity(path)["size"] == 2 * MiB
        assert list((folder / "identity").iterdir()) == []
    assert len(hashed) == 2


def test_concurrent_jobs_share_one_cache(tmp_path, hashed):
    """Jobs of an array starting together each write a whole entry (atomically): no torn JSON, no leftovers."""
    path = _old_file(tmp_path / "g.fa", _bytes(3 * MiB))
    results = []
    threads = [threading.Thread(target=lambda: results.append(file_identity(path))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    want = {"size": 3 * MiB, "sha256": hashlib.sha256(_bytes(3 * MiB)).hexdigest()}
    assert results == [want] * 6
    (entry,) = _entries()
    assert json.loads(entry.read_text())["sha256"] == want["sha256"]
    assert [p.name for p in entry.parent.iterdir()] == [entry.name]
    calls = len(hashed)
    assert file_identity(path) == want and len(hashed) == calls


def test_a_big_file_is_announced_once(tmp_path, hashed, monkeypatch, caplog):
    monkeypatch.setattr(identity, "ANNOUNCED_FROM_BYTES", 2 * MiB)
    path = _old_file(tmp_path / "hg38.fa", _bytes(3_100_000))
    with caplog.at_level(logging.INFO, logger="epiformer_cli.io.identity"):
        file_identity(path)
        file_identity(path)
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert said == ["hashing hg38.fa (3.1 MB) once to identify it; cached for next runs"]


def test_the_cache_folder_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("EPIFORMER_CACHE_DIR", str(tmp_path / "own"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "own"
    monkeypatch.delenv("EPIFORMER_CACHE_DIR")
    assert cache_dir() == tmp_path / "xdg" / "epiformer"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # ignored, as the XDG rule says
    assert cache_dir() == tmp_path / "home" / ".cache" / "epiformer"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == tmp_path / "home" / ".cache" / "epiformer"


def test_the_suite_caches_in_a_folder_of_its_own(identity_cache):
    """tests/conftest.py points every test, and the commands it starts, away from ~/.cache/epiformer."""
    assert cache_dir() == identity_cache and Path.home() / ".cache" not in identity_cache.parents
    code = "from epiformer_cli.io.identity import cache_dir; print(cache_dir())"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert child.stdout.strip() == str(identity_cache)


# ---- end to end: a null is not reused after the genome's middle changed ------------------------
def test_a_null_is_not_reused_after_the_middle_of_the_fasta_changed(tmp_path, hashed, caplog):
    """The genome is > 2 MiB, so the change lies where the old first-and-last-MiB identity never looked:
    with it, the second run reused the null of the old genome (stale p-values)."""
    rng = np.random.default_rng(0)
    seqs = {name: np.frombuffer(b"ACGT", np.uint8)[rng.integers(0, 4, n)].tobytes().decode()
            for name, n in (("chr1", 40_000), ("chr2", 2_400_000))}
    fasta = _aged(write_fasta(tmp_path / "g.fa", seqs))  # a genome lying around: cached like hg38
    cons = write_bigwig(tmp_path / "c.bw", {k: len(v) for k, v in seqs.items()},
                        {k: [(i, min(i + 1000, len(v)), float(rng.random())) for i in range(0, len(v), 1000)]
                         for k, v in seqs.items()})
    model = sensitive_model(seed=4)
    model_path = save_model(tmp_path / "m.pt", model, model.config, ["neuron", "glia", "astro"])
    vcf = tmp_path / "v.vcf"
    ref = seqs["chr1"][3_000]
    vcf.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
                   f"chr1\t3001\tv1\t{ref}\t{other(ref)}\t.\t.\t.\n")
    null = tmp_path / "null.tsv.gz"

    def run(out, force):
        return score(vcf=vcf, fasta=fasta, cons=cons, model=model_path, out=tmp_path / out, device="cpu",
                     null_size=100, null_path=null, force=force)

    run("a.tsv", force=False)
    old = read_null_key(null)["inputs"]["fasta"]
    assert old == file_identity(fasta) and len(_entries()) == 1  # the FASTA's identity was cached
    ends, size = _ends_only(fasta), fasta.stat().st_size
    # rewrite 164 kB in the middle of the file in place (every base to another, newlines kept)
    middle = size // 2
    with open(fasta, "r+b") as handle:
        handle.seek(middle - 82_000)
        block = handle.read(164_000)
        handle.seek(middle - 82_000)
        handle.write(block.translate(bytes.maketrans(b"ACGT", b"CGTA")))
    assert fasta.stat().st_size == size and _ends_only(fasta) == ends  # what the old identity saw: nothing
    with pytest.raises(UsageError, match=r"already holds a null made from other inputs \(--fasta: another file "
                                         r"\(sha256 differs: [0-9a-f]{8}\.\.\. in the null, [0-9a-f]{8}\.\.\. now\)\)"):
        run("b.tsv", force=False)
    with caplog.at_level(logging.INFO):
        run("c.tsv", force=True)
    assert "reusing the null" not in caplog.text
    new = read_null_key(null)["inputs"]["fasta"]
    assert new == {"size": size, "sha256": hashlib.sha256(fasta.read_bytes()).hexdigest()} and new != old
