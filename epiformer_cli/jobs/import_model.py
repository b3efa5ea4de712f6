"""``epiformer import-model``: a published Epiformer checkpoint -> an epiformer model file."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from epiformer_cli import __version__

log = logging.getLogger(__name__)


@dataclass
class ImportSummary:
    """What :func:`import_model` wrote."""

    out: Path
    checkpoint: Path
    n_layers: int
    n_heads: int
    d_model: int
    tracks: List[str]
    parameters: int

    def describe(self) -> str:
        return (f"wrote {self.out}: the published Epiformer of {self.checkpoint.name} ({self.n_layers} layers, "
                f"{self.n_heads} heads, width {self.d_model}, {self.parameters:,} parameters), "
                f"tracks {', '.join(self.tracks)}")


def import_model(checkpoint: str | Path, out: str | Path, *, tracks: Optional[Sequence[str] | str] = None,
                 force: bool = False) -> ImportSummary:
    """Convert a published Epiformer checkpoint into an epiformer model file.

    The checkpoint is read with ``weights_only=True`` on the CPU (no code runs), its settings and
    every weight are checked (nothing is written on an error), and the model file is written
    atomically with the track names, and as provenance the checkpoint's name, size and SHA-256,
    its ``param`` dict and its stored metrics.

    Args:
        checkpoint: the research code's ``*.pth.tar`` file.
        out: the model file to write (``*.pt``).
        tracks: one name per output track in output order (names, comma-separated strings, or
            one path to a file of one name per line); None names them track1..N, with a warning.
        force: overwrite ``out`` if it exists.
    """
    from epiformer_cli.runs import check_output
    from epiformer_cli.model.checkpoint import parse_track_names
    from epiformer_cli.model.families import family
    from epiformer_cli.model.modelfile import save_model
    from epiformer_cli.model.network import count_parameters

    checkpoint, out = Path(checkpoint), Path(out)
    check_output(out, inputs=[checkpoint], force=force)
    read = family("published").import_checkpoint(checkpoint)
    cfg = read.config
    names = parse_track_names(tracks, cfg.n_tracks, f"checkpoint {checkpoint}")
    if not tracks:
        log.warning("the checkpoint does not name its %d track(s): called them %s; give --tracks NAME,... "
                    "in the order the model was trained on to name them", cfg.n_tracks,
                    ", ".join(names) if len(names) <= 3 else f"{names[0]}..{names[-1]}")
    provenance = {
        "source": "published Epiformer checkpoint",
        "tool": f"epiformer {__version__} import-model",
        "checkpoint": {"name": checkpoint.name, "size": checkpoint.stat().st_size, "sha256": read.sha256},
        "param": read.param,
        "metrics": read.metrics,
        "tracks_named": bool(tracks),
    }
    save_model(out, read.model, cfg, names, normalization={}, provenance=provenance)  # already checked
    return ImportSummary(out=out, checkpoint=checkpoint, n_layers=cfg.n_layers, n_heads=cfg.n_heads,
                         d_model=cfg.d_model, tracks=names, parameters=count_parameters(read.model))
