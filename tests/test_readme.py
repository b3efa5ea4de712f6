"""The README's examples run as they are written, against a small world, so they cannot go stale.

Every fenced ``bash`` and ``python`` block of README.md runs, in order, in one folder that holds the
files the examples name (``hg38.fa``, ``phastcons.bw``, ``targets.tsv``, ``risk.vcf.gz``, a
published checkpoint ``brain18.best_corr.pth.tar`` ...), made from the synthetic demo genome. Only
scale is changed, by the explicit table :data:`SCALE` (a tiny preset for the full-size one, two
training steps, a null of 100 SNVs, the demo's chromosome names for hg38's), and the lines in
:data:`NOT_HERE` are skipped, each with the reason. A block fails the test when any of its commands
exits non-zero.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import torch

from tests.helpers import bgzip_text
from tests.published_reference import published_checkpoint, published_param, published_state_dict

README = Path(__file__).resolve().parents[1] / "README.md"

#: (pattern, replacement): scale only, never what an option means.
SCALE: List[Tuple[str, str]] = [
    (r"--preset epiformer\b", "--preset tiny"),  # a full-size model trains for hours on a CPU
    (r"--window 98304\b", "--window 16384"),     # the world's published checkpoint takes 16 kb
    (r"\bepiformer train\b", "epiformer train --max-steps 2"),
    (r"\bepiformer score-variants\b", "epiformer score-variants --null-size 100"),
    (r"--explain-top 20\b", "--explain-top 2"),
    (r"score_bins=5,", "score_bins=5, null_size=100,"),
    (r"--top \d{3,}\b", "--top 3"),                # thousands of regions are for a real genome
    (r"--flank 200\b", "--flank 20"),               # every base of 401 bp, both alleles, 12 variants: a minute
]

#: the start of a line that cannot run here -> why
NOT_HERE: Dict[str, str] = {
    "pip install": "the set-up command is what CI runs on a fresh machine",
    "python -m pytest": "this is the test suite",
    "torchrun": "tests/test_train_distributed.py runs training under torchrun",
    "epiformer demo --out": "the full demo takes many minutes (CI runs it)",
    "epiformer motifs": "the world's model trained for 2 steps has no motif to find: tests/test_motifs.py runs "
                        "motifs on planted contributions, tests/test_demo_pipeline.py on the demo's trained model",
}
TOOLS = ("bcftools", "bgzip", "tabix", "samtools")  # a line needing one that is missing is skipped

TRACKS_18 = "ASCT,OPC,OGC,MGC,VIP,LAMP5,PVALB,SST,MSN,FOXP2,ITL23,ITL4,ITL5,ITL6,ITL6_2,CT,L6B,NP".split(",")


def readme_blocks(text: str) -> List[Tuple[int, str, str]]:
    """(line number, language, code) of every fenced block."""
    blocks, language, start, lines = [], None, 0, []
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            if language is None:
                language, start, lines = line[3:].strip(), number, []
            else:
                blocks.append((start, language, "\n".join(lines)))
                language = None
        elif language is not None:
            lines.append(line)
    return blocks


def runnable(code: str) -> Tuple[str, List[str]]:
    """The block with its continuation lines joined, scaled, and the lines that cannot run here
    replaced by ``true``; returns the script and the skipped lines."""
    joined = re.sub(r"\\\n\s*", "", code)
    script, skipped = [], []
    for line in joined.splitlines():
        command = line.strip()
        needs = [tool for tool in TOOLS if re.search(rf"(^|\|)\s*{tool}\b", command) and shutil.which(tool) is None]
        if any(command.startswith(start) for start in NOT_HERE) or needs or command == "epiformer demo":
            skipped.append(command)
            continue
        for pattern, replacement in SCALE:
            line = re.sub(pattern, replacement, line)
        script.append(line)
    return "\n".join(script), skipped


#: the demo genome's chromosomes under the names the examples use (hg38 holds out chr8 and chr9)
RENAMED = {"chr1": "chr1", "chr2": "chr2", "chr3": "chr8", "chrX": "chr9"}


def _renamed_lines(text: str) -> str:
    """Text lines of a BED or VCF with the first column renamed (headers and ``##contig`` too)."""
    out = []
    for line in text.splitlines():
        if line.startswith("##contig=<ID="):
            name = line[len("##contig=<ID="):].split(",", 1)[0].rstrip(">")
            line = line.replace(f"ID={name}", f"ID={RENAMED.get(name, name)}", 1)
        elif line and not line.startswith("#"):
            chrom, rest = line.split("\t", 1)
            line = f"{RENAMED.get(chrom, chrom)}\t{rest}"
        out.append(line)
    return "\n".join(out) + "\n"


def _renamed_bigwig(source: Path, target: Path) -> None:
    import pyBigWig

    with pyBigWig.open(str(source)) as bw:
        header = [(RENAMED[c], n) for c, n in bw.chroms().items()]
        intervals = {c: bw.intervals(c) or () for c in bw.chroms()}
    order = {name: i for i, (name, _) in enumerate(header)}
    with pyBigWig.open(str(target), "w") as out:
        out.addHeader(header)
        for chrom in sorted(intervals, key=lambda c: order[RENAMED[c]]):
            values = intervals[chrom]
            if values:
                out.addEntries([RENAMED[chrom]] * len(values), [v[0] for v in values], ends=[v[1] for v in values],
                               values=[float(v[2]) for v in values])


def _demo_world(folder: Path) -> None:
    """The files the README's examples name, made from the synthetic demo."""
    import gzip

    from epiformer_cli.demo.generator import generate_demo

    data = folder / "_demo"
    generate_demo(data)
    fasta = data.joinpath("genome.fa").read_text()
    for old, new in RENAMED.items():
        fasta = fasta.replace(f">{old}\n", f">{new}\n")
    (folder / "hg38.fa").write_text(fasta)
    _renamed_bigwig(data / "conservation.bw", folder / "phastcons.bw")
    shutil.copy(folder / "phastcons.bw", folder / "hg38.phastCons100way.bw")
    (folder / "bw").mkdir()
    names = {"ASCT": "oligodendrocyte", "OPC": "neuron", "MG": "microglia"}
    for name, track in names.items():
        _renamed_bigwig(data / "targets" / f"{track}.bw", folder / "bw" / f"{name}.bw")
    header = "name\tpath\tscale\tclip\tstat\n"
    (folder / "targets.tsv").write_text(header + "".join(f"{n}\tbw/{n}.bw\t1.0\t128\tmean\n" for n in names))
    (folder / "my_tracks.tsv").write_text(header + "ASCT\tbw/ASCT.bw\t1.0\t128\tmean\nMyCell\tbw/MG.bw\t1.0\t128\tmean\n")
    (folder / "hg38-blacklist.v2.bed").write_text(_renamed_lines(data.joinpath("blacklist.bed").read_text()))
    elements = [line for line in _renamed_lines(data.joinpath("elements.bed").read_text()).splitlines()
                if 150 <= int(line.split("\t")[2]) - int(line.split("\t")[1]) <= 400 and line.startswith("chr8\t")]
    (folder / "peaks.bed").write_text("\n".join(elements[:2]) + "\n")
    # two donors' Cell Ranger ATAC outputs: the demo's fragments dealt out, the same barcodes in both
    with gzip.open(data / "fragments.tsv.gz", "rt") as handle:
        rows = [line for line in _renamed_lines(handle.read()).splitlines() if not line.startswith("#")]
    cells = [line.split("\t") for line in data.joinpath("cells.tsv").read_text().splitlines()[1:]]
    table = "barcode\tcell_type\tsample\n"
    for k, donor in enumerate(("donor1", "donor2")):
        (folder / donor / "outs").mkdir(parents=True)
        bgzip_text("\n".join(rows[k::2]) + "\n", folder / donor / "outs" / "fragments.tsv.gz")
        table += "".join(f"{barcode}\t{cell_type}\t{donor}\n" for barcode, cell_type in cells)
    (folder / "cell_types.tsv").write_text(table)
    with gzip.open(data / "variants.vcf.gz", "rt") as handle:
        lines = _renamed_lines(handle.read()).splitlines()
    header_lines = [line for line in lines if line.startswith("#")]
    records = [line for line in lines if not line.startswith("#")]
    risk = "\n".join(header_lines + records[:12]) + "\n"
    (folder / "risk.vcf").write_text(risk)
    bgzip_text(risk, folder / "risk.vcf.gz")
    bgzip_text("\n".join(header_lines + records[300:312]) + "\n", folder / "gwas.vcf.gz")
    # a published checkpoint of the published architecture at 16 kb with the eighteen brain tracks
    # (the relative-position table has 2 * embed_size - 1 rows: embed_size must cover the 128 bins)
    param = published_param(seq_len=16_384, max_len=160, embed_size=140, num_heads=4, num_encoder_layers=1,
                            multiout_dim=18, crop_size=16, dim_feedforward=128)
    state = published_state_dict(param, stem_channels=32, width=64)
    torch.save(published_checkpoint(param, state), folder / "brain18.best_corr.pth.tar")
    (folder / "tracks.txt").write_text("\n".join(TRACKS_18) + "\n")
    (folder / "brain.pt").symlink_to("run/model.pt")  # made by the train example
    home = folder / "home"
    (home / "models").mkdir(parents=True)
    (home / "ref").mkdir()
    (home / "models" / "brain18.pt").symlink_to(folder / "brain18.pt")  # made by import-model
    (home / "ref" / "hg38.fa").symlink_to(folder / "hg38.fa")
    (home / "ref" / "hg38.phastCons100way.bw").symlink_to(folder / "hg38.phastCons100way.bw")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("readme-world")
    _demo_world(folder)
    return folder


def _environment(world: Path) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EPIFORMER_", "SLURM_"))
           or k == "EPIFORMER_CACHE_DIR"}
    env.update(HOME=str(world / "home"), OMP_NUM_THREADS="1", PYTHONPATH=str(README.parent))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def array_tasks(code: str) -> List[Dict[str, str]]:
    """The SLURM environment of each task of an ``#SBATCH --array=A-B`` script (one empty
    environment for a plain block): the tasks run one after the other, one schedule SLURM may pick."""
    found = re.search(r"#SBATCH .*--array=(\d+)-(\d+)", code)
    if not found:
        return [{}]
    first, last = int(found.group(1)), int(found.group(2))
    return [dict(SLURM_ARRAY_TASK_ID=str(task), SLURM_ARRAY_TASK_MIN=str(first),
                 SLURM_ARRAY_TASK_COUNT=str(last - first + 1)) for task in range(first, last + 1)]


def test_the_readme_tables_list_every_option_as_help_says_it():
    """README's option tables are what docs/make_option_tables.py makes from the commands: run it
    after changing an option or its help."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_option_tables", README.parent / "docs" / "make_option_tables.py")
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    text = README.read_text()
    assert text.count(tables.START) == 1 and text.count(tables.END) == 1
    assert tables.replace_block(text, tables.render_option_tables()) == text, \
        "README's option tables are stale: run python docs/make_option_tables.py"


def test_the_readme_has_examples_of_every_command():
    text = README.read_text()
    code = "\n".join(block for _, language, block in readme_blocks(text) if language in ("bash", "python"))
    for command in ("pseudobulk", "prepare", "train", "evaluate", "predict", "export-bigwig", "score-variants",
                    "explain", "motifs", "import-model", "info", "demo", "cache"):
        assert f"epiformer {command}" in code, command


def test_an_array_script_runs_as_each_of_its_tasks():
    assert array_tasks("epiformer info\n") == [{}]
    tasks = array_tasks("#!/bin/bash\n#SBATCH --array=1-3 --gres=gpu:1\nepiformer predict\n")
    assert [t["SLURM_ARRAY_TASK_ID"] for t in tasks] == ["1", "2", "3"]
    assert {t["SLURM_ARRAY_TASK_COUNT"] for t in tasks} == {"3"} and {t["SLURM_ARRAY_TASK_MIN"] for t in tasks} == {"1"}


def test_scaling_never_changes_what_an_example_asks_for():
    script, skipped = runnable("epiformer train --data d --out r --preset epiformer \\\n    --epochs 100\n"
                               "torchrun --nproc_per_node=4 -m epiformer_cli train\n")
    assert script == "epiformer train --max-steps 2 --data d --out r --preset tiny --epochs 100"
    assert skipped == ["torchrun --nproc_per_node=4 -m epiformer_cli train"]


@pytest.mark.slow  # every example, in a world made from the demo: minutes
def test_readme_examples_run(world):
    blocks = [(line, language, code) for line, language, code in readme_blocks(README.read_text())
              if language in ("bash", "python")]
    assert len(blocks) >= 10
    ran = 0
    for line, language, code in blocks:
        if language == "bash":
            script, _ = runnable(code)
            if not script.strip() or all(s.strip().startswith("#") for s in script.splitlines() if s.strip()):
                continue
            for task in array_tasks(code):
                result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=world,
                                        env={**_environment(world), **task}, capture_output=True, text=True,
                                        timeout=900)
                if result.returncode:
                    break
        else:
            script, _ = runnable(code)
            # the Python example imports the published model again: its own folder, the world's inputs linked
            folder = world / f"python-{line}"
            folder.mkdir()
            for entry in world.iterdir():
                if entry.name not in ("brain18.pt",) and not entry.name.startswith(("python-", "_")):
                    (folder / entry.name).symlink_to(entry)
            result = subprocess.run([sys.executable, "-c", script], cwd=folder, env=_environment(world),
                                    capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"README line {line}:\n{script}\n--- stderr ---\n{result.stderr[-3000:]}"
        ran += 1
    assert ran >= 10
