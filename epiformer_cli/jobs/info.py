"""``epiformer info``: what a model file holds, without running it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

#: what ``info`` reads, said when it is given anything else
ACCEPTS = "`epiformer info` describes a model file (a .pt written by `epiformer train` or `epiformer import-model`)"


def model_info(path: str | Path) -> Dict[str, Any]:
    """A JSON-ready description of a model file: family, input, output, size, tracks, provenance.

    The file is loaded as any command loads it (plain data only, every weight checked), so a
    file ``info`` accepts is one the other commands accept.

    Raises:
        ModelFileError: ``path`` is no model file (:func:`~epiformer_cli.model.modelfile.refuse_non_model`) or one that does not load.
    """
    from epiformer_cli.io.identity import sha256_file
    from epiformer_cli.model.modelfile import load_model, refuse_non_model
    from epiformer_cli.model.network import count_parameters

    path = Path(path)
    refuse_non_model(path, ACCEPTS)  # before load_model's own check, in info's words
    loaded = load_model(path)
    cfg = loaded.config
    return {
        "file": str(path), "size": path.stat().st_size, "sha256": sha256_file(path),
        "format_version": loaded.format_version,
        "arch": cfg.arch, "parameters": count_parameters(loaded.model),
        "input_bp": cfg.seq_len, "conservation": cfg.conservation,
        "bin_size": cfg.bin_size, "output_bins": cfg.out_bins, "output_bp": cfg.out_bp, "context_bp": cfg.crop_bp,
        "tracks": loaded.tracks, "config": cfg.to_dict(),
        "normalization": loaded.normalization, "provenance": loaded.provenance,
    }


def machine_info() -> Dict[str, Any]:
    """How this process computes on the CPU: the CPUs it may use and why (affinity, cgroup quota),
    the threads torch computes with, its OpenMP runtime and how that runtime's idle threads wait, and
    where the cache folder is."""
    import torch

    from epiformer_cli.io.identity import cache_dir
    from epiformer_cli.threads import openmp_runtime, usable_cpus, wait_policy

    cpus = usable_cpus()
    return {
        "usable_cpus": cpus.cpus, "cpus_source": cpus.source, "affinity_cpus": cpus.affinity,
        "cgroup_quota_cpus": cpus.quota, "cgroup_quota_file": cpus.quota_file,
        "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
        "openmp": openmp_runtime(), "wait_policy": wait_policy(), "cache_folder": str(cache_dir()),
    }


def describe_machine(machine: Dict[str, Any]) -> List[str]:
    """Human-readable lines for :func:`machine_info`'s dict."""
    quota = machine["cgroup_quota_cpus"]
    why = (f"cgroup quota {quota:g} CPUs; affinity {machine['affinity_cpus']}" if machine["cpus_source"] == "cgroup quota"
           else f"affinity; {'cgroup quota %g CPUs' % quota if quota is not None else 'no cgroup quota'}")
    return [
        f"cpus          {machine['usable_cpus']} usable ({why})",
        f"threads       {machine['threads']} (--threads or EPIFORMER_THREADS to change); OpenMP {machine['openmp']}, "
        f"idle threads wait: {machine['wait_policy']}",
        f"cache         {machine['cache_folder']} (score-variants' nulls, file identities: `epiformer cache list`)",
    ]


_CONSERVATION = {
    "channel": "one-hot + phastCons as a fifth channel",
    "scale": "one-hot x exp(phastCons)",
    "none": "one-hot, no conservation",
}


def describe_info(info: Dict[str, Any]) -> List[str]:
    """Human-readable lines for :func:`model_info`'s dict."""
    from epiformer_cli.model.families import family_description

    cfg = info["config"]
    tracks = info["tracks"]
    lines = [
        f"model file    {info['file']} ({info['size'] / 1e6:,.1f} MB, sha256 {info['sha256'][:16]}...)",
        f"family        {family_description(info['arch'])}",
        f"input         {info['input_bp']:,} bp, {_CONSERVATION.get(info['conservation'], info['conservation'])}",
        f"output        {info['output_bins']} bins of {info['bin_size']} bp ({info['output_bp']:,} bp centred in "
        f"the window; {info['context_bp']:,} bp of context on each side)",
        f"network       {cfg['n_layers']} layers, {cfg['n_heads']} heads, width {cfg['d_model']}, "
        f"{info['parameters']:,} parameters",
        f"tracks ({len(tracks)})    {', '.join(tracks)}",
    ]
    prov = info["provenance"] or {}
    if "checkpoint" in prov:
        ck = prov["checkpoint"]
        metrics = ", ".join(f"{k.replace('current_', '')} {v:.4g}" for k, v in (prov.get("metrics") or {}).items())
        lines.append(f"provenance    imported from {ck.get('name')} (sha256 {str(ck.get('sha256'))[:16]}...)"
                     + (f"; stored metrics: {metrics}" if metrics else ""))
        if not prov.get("tracks_named", True):
            lines.append("              track names were not given at import: they are placeholders")
    elif prov:
        parts = [f"{k} {prov[k]}" for k in ("tool", "date", "epoch", "step") if k in prov]
        metrics = prov.get("metrics") or {}
        if "pearson" in metrics:
            parts.append(f"validation pearson {metrics['pearson']:.4g}")
        if "init" in prov:
            parts.append(f"fine-tuned from {prov['init'].get('name')}")
        lines.append("provenance    " + ", ".join(parts))
    return lines
