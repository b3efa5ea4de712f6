"""`epiformer predict` and `epiformer explain` (ISM) with and without a competing busy process, the
code before and after the thread rules (epiformer_cli/threads.py), side by side in one run.

Run:  python benchmarks/bench_threads.py                      # 10 Mb predict, 100 bp ISM, 3 rounds
      python benchmarks/bench_threads.py --mb 2 --region-bp 40 --rounds 1     # a quick check
      python benchmarks/bench_threads.py --variant passive=before:OMP_WAIT_POLICY=PASSIVE \\
                                         --variant spin10k=before:GOMP_SPINCOUNT=10000

Each cell is one `python -m epiformer_cli` child process (tiny preset, random weights, 2 tracks,
--device cpu, the commands' defaults otherwise: reverse-complement averaging on), timed by wall clock
from start to exit (interpreter start and imports included, ~2-3 s):

- predict: a generated genome of one chromosome of --mb Mb (random ACGT, conservation bigWig), the
  whole chromosome;
- explain: ISM of one region of --region-bp bp (3 mutants a base) in the middle of that chromosome,
  --plot 0.

Loads: ``idle``, and ``busy``: ``taskset -c 0 python -c "while True: pass"`` running for the whole
cell (one busy process pinned to core 0; epiformer itself is not pinned).
Variants: ``before`` runs the code of --before-rev (default HEAD: ``git archive`` extracted into
--before, run via PYTHONPATH), ``after`` the working tree; ``--variant NAME=CODE[:VAR=VALUE,...]`` adds one (CODE
``before`` or ``after``, with extra environment variables). OMP_WAIT_POLICY, GOMP_SPINCOUNT,
KMP_BLOCKTIME, OMP_NUM_THREADS and EPIFORMER_THREADS are removed from every child's environment
unless a variant sets them.

Rounds are interleaved (each round runs every load x variant x task once, the variants' order
rotated per round), so a shared machine disturbs every column alike; medians over rounds are
printed with the per-round values, then ratios: each variant / before at the same load, and busy /
idle for each variant.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]  # bench_predict; the working tree even without an install

#: variables that choose OpenMP's threads and waiting: a child has them only when a variant sets them
CLEARED = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
           "EPIFORMER_THREADS")


def extract_before(folder: Path, commit: str, repo: Path = REPO) -> Path:
    """``commit``'s tree of ``repo`` in ``folder`` (extracted once; an existing folder is reused)."""
    if not (folder / "epiformer_cli" / "__init__.py").exists():
        folder.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(repo), "archive", commit], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def parse_variant(text: str, trees: Dict[str, Path]) -> Tuple[str, Path, Dict[str, str]]:
    """``passive=before:OMP_WAIT_POLICY=PASSIVE,GOMP_SPINCOUNT=0`` -> (name, code tree, extra env)."""
    name, _, rest = text.partition("=")
    code, _, env_text = rest.partition(":")
    if not name or code not in trees:
        raise SystemExit(f"--variant {text!r}: expected NAME=before|after[:VAR=VALUE,...]")
    env = dict(item.split("=", 1) for item in env_text.split(",") if item)
    return name, trees[code], env


def inputs(workdir: Path, mb: int, region_bp: int) -> Dict[str, Path]:
    """The genome, conservation, tiny model and one-region BED every cell reads."""
    from bench_predict import model_file, write_genome

    fasta, cons = write_genome(workdir, mb, chrom_mb=mb)
    model = model_file(workdir)
    middle = mb * 1_000_000 // 2
    bed = workdir / "region.bed"
    bed.write_text(f"chr1\t{middle}\t{middle + region_bp}\n")
    return {"fasta": fasta, "cons": cons, "model": model, "bed": bed}


def command(task: str, files: Dict[str, Path], out: Path, nice: int = 0) -> List[str]:
    prefix = ["nice", "-n", str(nice)] if nice else []
    common = ["--fasta", str(files["fasta"]), "--cons", str(files["cons"]), "--model", str(files["model"]),
              "--device", "cpu"]
    if task == "predict":
        return [*prefix, sys.executable, "-m", "epiformer_cli", "-q", "predict", *common, "--out", str(out / "pred.bw")]
    return [*prefix, sys.executable, "-m", "epiformer_cli", "-q", "explain", *common, "--regions", str(files["bed"]),
            "--method", "ism", "--plot", "0", "--out", str(out / "explain")]


def child_env(tree: Path, extra: Dict[str, str]) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env["PYTHONPATH"] = str(tree)
    env.update(extra)
    return env


def timed(cmd: List[str], env: Dict[str, str], out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    start = time.perf_counter()
    # cwd: `python -m` puts the current folder first on sys.path, which must not be a source tree
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=out)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    shutil.rmtree(out, ignore_errors=True)
    return seconds


def busy_process(nice: int = 0) -> subprocess.Popen:
    """One process spinning on core 0 (what a neighbour's job does to a shared node), at the
    benchmark's own priority."""
    prefix = ["nice", "-n", str(nice)] if nice else []
    return subprocess.Popen([*prefix, "taskset", "-c", "0", sys.executable, "-c", "while True: pass"])


def check_trees(variants, cwd: Path) -> None:
    """Each variant's child imports epiformer_cli from its own tree (PYTHONPATH before the install)."""
    for name, tree, extra in variants:
        found = subprocess.run([sys.executable, "-c", "import epiformer_cli; print(epiformer_cli.__file__)"], cwd=cwd,
                               env=child_env(tree, extra), capture_output=True, text=True, check=True).stdout.strip()
        if not Path(found).resolve().is_relative_to(tree.resolve()):
            raise SystemExit(f"variant {name}: the child imports {found}, not the tree {tree}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=10, help="predict: Mb of the generated chromosome")
    parser.add_argument("--region-bp", type=int, default=100, help="explain: bp of the ISM region")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loads", default="idle,busy")
    parser.add_argument("--tasks", default="predict,explain")
    parser.add_argument("--before-rev", default="HEAD",
                        help="the commit whose code is 'before' (once the change is committed: the commit before it)")
    parser.add_argument("--before", type=Path, default=None,
                        help="where that commit's tree is extracted [default: TMP/threads-before-<commit>]")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=CODE[:VAR=VALUE,...]")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--nice", type=int, default=0,
                        help="run the cells and the busy process at this niceness; on a machine shared with "
                             "other users' work, a negative value (root only) makes 'idle' nearly idle")
    args = parser.parse_args()

    import torch

    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", args.before_rev], check=True, capture_output=True,
                            text=True).stdout.strip()
    before = args.before or Path(tempfile.gettempdir()) / f"threads-before-{commit[:12]}"
    trees = {"before": extract_before(before, commit), "after": REPO}
    variants = [("before", trees["before"], {}), ("after", trees["after"], {})]
    variants += [parse_variant(text, trees) for text in args.variant]
    loads = args.loads.split(",")
    tasks = args.tasks.split(",")
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="bench-threads-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    check_trees(variants, workdir)
    files = inputs(workdir, args.mb, args.region_bp)
    with open("/proc/loadavg") as handle:
        load_before = handle.read().split()[:3]
    print(f"torch {torch.__version__}; {os.cpu_count()} CPUs, affinity {len(os.sched_getaffinity(0))}; "
          f"load average {' '.join(load_before)}; niceness {args.nice}; before = {commit[:12]} ({before}), after = "
          f"{REPO}; workdir {workdir}", flush=True)
    print(f"predict: {args.mb} Mb; explain: ISM of {args.region_bp} bp ({3 * args.region_bp} mutants); tiny preset, "
          f"rc averaging on; variants: " + "; ".join(
              f"{n} ({'before' if t == trees['before'] else 'after'}{' ' + ' '.join(f'{k}={v}' for k, v in e.items()) if e else ''})"
              for n, t, e in variants), flush=True)

    seconds: Dict[Tuple[str, str, str], List[float]] = {}
    for r in range(args.rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        for load in loads:
            busy = busy_process(args.nice) if load == "busy" else None
            try:
                for name, tree, extra in order:
                    for task in tasks:
                        s = timed(command(task, files, workdir / "out", args.nice), child_env(tree, extra), workdir / "out")
                        seconds.setdefault((task, load, name), []).append(s)
                        print(f"  round {r + 1} {load:4s} {name:10s} {task:8s} {s:7.1f} s", flush=True)
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()

    med = {key: statistics.median(values) for key, values in seconds.items()}
    names = [name for name, _, _ in variants]
    width = max(10, *(len(n) + 2 for n in names))
    print("\nseconds (median over rounds; per-round values in the log above)")
    print(f"{'task':8s} {'load':5s}" + "".join(f"{n:>{width}s}" for n in names)
          + "".join(f"{n + '/before':>{width + 7}s}" for n in names[1:]))
    for task in tasks:
        for load in loads:
            row = [med[(task, load, n)] for n in names]
            print(f"{task:8s} {load:5s}" + "".join(f"{v:{width}.1f}" for v in row)
                  + "".join(f"{v / row[0]:{width + 7}.2f}" for v in row[1:]))
    if "idle" in loads and "busy" in loads:
        print("\nbusy / idle")
        print(f"{'task':8s}" + "".join(f"{n:>{width}s}" for n in names))
        for task in tasks:
            print(f"{task:8s}" + "".join(f"{med[(task, 'busy', n)] / med[(task, 'idle', n)]:{width}.2f}" for n in names))
    with open("/proc/loadavg") as handle:
        print(f"\nload average at the end {' '.join(handle.read().split()[:3])}")


if __name__ == "__main__":
    main()
