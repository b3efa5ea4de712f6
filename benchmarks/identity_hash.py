"""What identifying an input by a SHA-256 of every byte costs (issue 21): first run and cached runs.

Run:  python benchmarks/identity_hash.py [--size 3.15e9] [--workdir DIR] [--repeats 3]

Writes a FASTA-like file of ``--size`` bytes (default 3.15e9: hg38's 3.1 Gb at 61 bytes per 60
bases) in a temporary folder (checked first with ``shutil.disk_usage``: a smaller size, said so,
when the folder has not the room), gives it an mtime an hour ago (a genome lying around; a file
modified in the last 2 s is hashed but not cached), and times, with the identity cache in the
same temporary folder (never ~/.cache):

1. the first identity from disk: the file's pages dropped from the page cache
   (``posix_fadvise(DONTNEED)`` after an fsync: this file only, not the machine's cache), so the
   disk is read as on the first run over a genome;
2. the first identity from the page cache (the cache entry removed, best of ``--repeats``): the
   rate of SHA-256 itself plus the copy out of the page cache;
3. the cached identity (a stat, one small JSON read), best of ``--repeats``;
4. the ends-only identity used before (a SHA-256 of the first and last MiB), best of ``--repeats``;
5. ``hashlib.sha256`` on a 64 MiB buffer in memory (the hash alone), and what hashing a file at
   the caching threshold (``CACHED_FROM_BYTES``) costs at that rate.

The temporary folder and the big file are removed at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_forward import loadavg  # noqa: E402  (sibling scripts, not a package)
from epiformer_cli.io import identity  # noqa: E402

MiB = 1 << 20
HEADROOM = 2 * 10**9  # left free for everyone else on the disk


def ends_only(path: Path) -> dict:
    """The identity before issue 21: name, size and a SHA-256 of the first and last MiB."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(MiB))
        if size > 2 * MiB:
            handle.seek(size - MiB)
            digest.update(handle.read(MiB))
    return {"name": path.name, "size": size, "sha256_ends": digest.hexdigest()}


def write_fasta_like(path: Path, size: int) -> None:
    """``size`` bytes of 60-column ACGT lines (one random 8 MiB block repeated: SHA-256 runs at the
    same rate on any bytes, and the disk is what writing costs)."""
    import random

    rng = random.Random(0)
    line_count = (8 * MiB) // 61
    block = b"".join(bytes(rng.choices(b"ACGT", k=60)) + b"\n" for _ in range(line_count))
    with open(path, "wb") as handle:
        handle.write(b">chr1\n")
        left = size - 6
        while left > 0:
            piece = block[:left]
            handle.write(piece)
            left -= len(piece)
        handle.flush()
        os.fsync(handle.fileno())


def drop_from_page_cache(path: Path) -> bool:
    if not hasattr(os, "posix_fadvise"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return True


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def human(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.0f} us"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=float, default=3.15e9, help="bytes of the test file (default hg38-sized)")
    parser.add_argument("--workdir", type=Path, default=None, help="folder for the temporary folder (default $TMPDIR)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    base = args.workdir or Path(tempfile.gettempdir())
    wanted = int(args.size)
    free = shutil.disk_usage(base).free
    size = min(wanted, free - HEADROOM)
    if size < 64 * MiB:
        sys.exit(f"{base}: only {free / 1e9:.1f} GB free: give --workdir on a disk with room")
    if size < wanted:
        print(f"NOTE: {base} has {free / 1e9:.1f} GB free: using {size / 1e9:.2f} GB instead of {wanted / 1e9:.2f} GB")

    print(f"load average before: {loadavg()}")
    folder = Path(tempfile.mkdtemp(prefix="identity-bench-", dir=base))
    os.environ["EPIFORMER_CACHE_DIR"] = str(folder / "cache")
    try:
        path = folder / "hg38.fa"
        start = time.perf_counter()
        write_fasta_like(path, size)
        print(f"wrote {path.name}: {size:,} bytes in {time.perf_counter() - start:.1f} s (not counted)")
        past = time.time_ns() - 3600 * 10**9
        os.utime(path, ns=(past, past))
        entry = identity._entry_path(path.resolve())

        dropped = drop_from_page_cache(path)
        logging.basicConfig(level=logging.WARNING, format="    log: %(message)s")
        identity.log.setLevel(logging.INFO)  # the one line a user sees, on the first run only
        start = time.perf_counter()
        first = identity.file_identity(path)
        cold = time.perf_counter() - start
        identity.log.setLevel(logging.WARNING)
        assert entry.is_file(), "the identity was not cached"

        def uncached():
            entry.unlink()
            identity.file_identity(path)

        warm = best(uncached, args.repeats)
        assert entry.is_file()
        cached = best(lambda: identity.file_identity(path), args.repeats * 100)
        assert identity.file_identity(path) == first
        old = best(lambda: ends_only(path), args.repeats * 10)

        buffer = os.urandom(64 * MiB)
        raw = best(lambda: hashlib.sha256(buffer).digest(), args.repeats)
        rate = len(buffer) / raw
        print(f"load average after: {loadavg()}")
        print()
        print(f"    file: {size / 1e9:.2f} GB; hash blocks of {identity.HASH_BLOCK // MiB} MiB; "
              f"cached from {identity.CACHED_FROM_BYTES // MiB} MiB")
        print(f"    {'identity':58s} {'time':>10s} {'GB/s':>8s}")
        label = "first run, from disk (page cache dropped)" if dropped else "first run (page cache NOT dropped)"
        rows = [(label, cold, size / cold),
                ("first run, from the page cache (best)", warm, size / warm),
                ("cached (stat + JSON entry, best)", cached, None),
                ("old: ends only (first + last MiB, best)", old, None),
                ("hashlib.sha256, 64 MiB in memory (best)", raw, rate)]
        for name, seconds, gbps in rows:
            print(f"    {name:58s} {human(seconds):>10s} {'' if gbps is None else f'{gbps / 1e9:.2f}':>8s}")
        print(f"    first run from disk / cached: {cold / cached:,.0f}x; "
              f"from the page cache / cached: {warm / cached:,.0f}x")
        print(f"    old ends-only / cached: {old / cached:.1f}x (the cached identity is the cheaper of the two)")
        print(f"    a file at the caching threshold ({identity.CACHED_FROM_BYTES // MiB} MiB) hashed at the in-memory "
              f"rate: {human(identity.CACHED_FROM_BYTES / rate)}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        print(f"removed {folder}: {'gone' if not folder.exists() else 'STILL THERE'}")


if __name__ == "__main__":
    main()
