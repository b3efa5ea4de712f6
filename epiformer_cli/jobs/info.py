"""``epiformer info``: what a model file holds, without running it."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Dict, List

from epiformer_cli.errors import ModelFileError

#: what ``info`` reads, said when it is given anything else
ACCEPTS = "`epiformer info` describes a model file (a .pt written by `epiformer train` or `epiformer import-model`)"
_HEAD = 4096  # bytes looked at to tell a text file


def check_model_kind(path: Path) -> None:
    """Refuse, in one line saying what ``info`` accepts, what is plainly no model file, before
    torch reads it: a folder (a store, a training run), an empty file, a text file (metrics.tsv, a
    BED), gzip data, a zip archive of something else (an .npz), or bytes that are neither a zip
    archive (what ``torch.save`` writes) nor a pickle (its older format). A missing or
    unreadable path is left to the loader's own message.

    Raises:
        ModelFileError: naming the file, what it looks like, and what ``info`` accepts.
    """
    if path.is_dir():
        if (path / "model.pt").is_file():
            raise ModelFileError(f"{path} is a folder (a training run?): give its model file, "
                                 f"{path / 'model.pt'}: {ACCEPTS}")
        kind = "a store folder" if (path / "manifest.json").is_file() else "a folder"
        raise ModelFileError(f"{path} is {kind}, not a model file: {ACCEPTS}")
    try:
        with open(path, "rb") as handle:
            head = handle.read(_HEAD)
    except OSError:
        return  # missing or unreadable: load_model says which
    if not head:
        raise ModelFileError(f"{path} is empty (0 bytes), not a model file: {ACCEPTS}")
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return  # a damaged zip: load_model says it is truncated or corrupt
        if not any(name.endswith(("/data.pkl", "/constants.pkl")) for name in names):
            raise ModelFileError(f"{path} is a zip archive of other files (such as an .npz of arrays), not a "
                                 f"model file: {ACCEPTS}")
        return
    if head[:1] == b"\x80":  # a pickle (protocol 2+): torch's legacy format; load_model judges it
        return
    if head.startswith(b"\x1f\x8b"):
        raise ModelFileError(f"{path} holds gzip-compressed data (a table or a null?), not a model file: {ACCEPTS}")
    text = _as_text(head)
    if text is not None:
        first = next((line for line in text.lstrip("\ufeff").splitlines() if line.strip()), "")
        raise ModelFileError(f"{path} is a text file (it starts {first[:40]!r}), not a model file: {ACCEPTS}")
    raise ModelFileError(f"{path} is not a model file (neither a zip archive, as torch.save writes, nor a "
                         f"pickle): {ACCEPTS}")


def _as_text(head: bytes) -> str | None:
    """``head`` as UTF-8 text without NUL bytes (a character cut at the end allowed), or None."""
    import codecs

    if b"\0" in head:
        return None
    try:
        return codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return None


def model_info(path: str | Path) -> Dict[str, Any]:
    """A JSON-ready description of a model file: family, input, output, size, tracks, provenance.

    The file is loaded as any command loads it (plain data only, every weight checked), so a
    file ``info`` accepts is one the other commands accept.

    Raises:
        ModelFileError: ``path`` is no model file (:func:`check_model_kind`) or one that does not load.
    """
    from epiformer_cli.io.identity import sha256_file
    from epiformer_cli.model.modelfile import load_model
    from epiformer_cli.model.network import count_parameters

    path = Path(path)
    check_model_kind(path)
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
