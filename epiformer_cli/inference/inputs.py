"""The one way to open a model's inputs: genome, conservation and model together, with one set of rules.

Every command that runs a model (``predict``, ``score-variants``, and the notebook API) goes
through :func:`open_inputs`, so the same inputs get the same refusal or warning everywhere:

* a model trained with conservation needs ``--cons``: refused without it, unless the user says
  ``--no-cons`` (then one warning: all-zero conservation changes the predictions);
* a model without conservation ignores ``--cons`` (said at info level);
* conservation is clipped to [0, 1] as the training store clips it (one warning when a file holds
  other values), NaN reads as missing, chromosome names are matched through the alias table, and
  chromosomes the bigWig lacks are named in one warning (read as 0);
* ``window``: the input length the caller expects; a model of another length is refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence

from epiformer_cli.errors import UsageError
from epiformer_cli.options import select_tracks

if TYPE_CHECKING:  # pragma: no cover - typing only
    from epiformer_cli.io.bigwig import BigWig
    from epiformer_cli.io.genome import Genome
    from epiformer_cli.model.modelfile import LoadedModel

log = logging.getLogger(__name__)


@dataclass
class ModelInputs:
    """An opened genome, conservation track and model, checked against each other.

    Attributes:
        genome: the FASTA.
        conservation: the conservation bigWig, bound to the FASTA's names and clipped to [0, 1];
            None when the model does not use conservation or ``--no-cons`` was given (all zero).
        loaded: the model file's contents (the network is on the CPU until an engine moves it).
        fasta, cons, model: the paths as given (``cons`` is None when not used).
    """

    genome: "Genome"
    conservation: Optional["BigWig"]
    loaded: "LoadedModel"
    fasta: Path
    cons: Optional[Path]
    model: Path

    @property
    def config(self):
        return self.loaded.config

    def track_indices(self, names: Optional[Sequence[str]]) -> list[int]:
        """Model output indices of track ``names`` (all when None), in the order given."""
        return [self.loaded.tracks.index(n) for n in self.track_names(names)]

    def track_names(self, names: Optional[Sequence[str]]) -> list[str]:
        """``names`` checked against the model's tracks (all when None)."""
        return select_tracks(self.loaded.tracks, names, f"model {self.model}")

    def identities(self) -> Dict[str, Any]:
        """What the results depend on, for resume fingerprints: the model's whole-file SHA-256 and
        track names, identities of the FASTA and conservation (see :func:`file_identity`)."""
        from epiformer_cli.io.identity import file_identity, sha256_file

        return {
            "model_sha256": sha256_file(self.model),
            "model_tracks": list(self.loaded.tracks),
            "fasta": file_identity(self.fasta),
            "cons": file_identity(self.cons) if self.cons is not None else None,
            "conservation_mode": self.config.conservation if self.cons is not None else "zero",
        }

    def close(self) -> None:
        self.genome.close()
        if self.conservation is not None:
            self.conservation.close()

    def __enter__(self) -> "ModelInputs":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def input_paths(fasta: Optional[str | Path], cons: Optional[str | Path], model: Optional[str | Path],
                *others: tuple) -> list:
    """The files a model-applying command reads, as ``(option, path)`` for the destination checks
    of :mod:`epiformer_cli.runs.destination` (an output is never one of them): the genome and its
    index files, the conservation, the model, and ``others`` (more ``(option, path)``; None and
    ``-`` are skipped)."""
    named = [("--fasta", fasta), ("--cons", cons), ("--model", model), *others]
    paths = [(name, Path(path)) for name, path in named if path is not None and str(path) != "-"]
    if fasta is not None:
        fasta = Path(fasta)
        paths += [("the --fasta index", fasta.with_name(fasta.name + suffix)) for suffix in (".fai", ".gzi")]
    return paths


def open_inputs(fasta: str | Path, cons: Optional[str | Path], model: str | Path, *, no_cons: bool = False,
                window: Optional[int] = None) -> ModelInputs:
    """Open the FASTA, the model and (when the model uses it) the conservation bigWig, applying
    the rules in the module docstring.

    Args:
        fasta: genome FASTA (plain or bgzipped).
        cons: conservation (phastCons) bigWig, or None.
        model: a model file (``epiformer train``).
        no_cons: run a model trained with conservation on all-zero conservation (warned once).
        window: the input length in bp the caller expects the model to take (None: any).

    Raises:
        UsageError: conservation needed but not given, or a model of another window length.
        InputFileError / ModelFileError / ChromosomeMismatchError: unreadable or mismatching files.
    """
    from epiformer_cli.io.genome import Genome
    from epiformer_cli.model.modelfile import load_model

    fasta, model = Path(fasta), Path(model)
    genome = Genome(fasta)
    loaded = load_model(model, "cpu")
    config = loaded.config
    if window is not None and window != config.seq_len:
        raise UsageError(f"{model} takes {config.seq_len:,} bp windows, not --window {window:,}: "
                         "drop --window or use a model trained for that length")
    conservation = None
    if config.conservation == "none":
        if cons is not None:
            log.info("%s does not use conservation: ignoring %s", model, cons)
        cons = None
    elif no_cons:
        log.warning("--no-cons: %s was trained with conservation (%r mode); running it on all-zero conservation "
                    "changes its predictions", model, config.conservation)
        if cons is not None:
            log.info("--no-cons: ignoring %s", cons)
        cons = None
    elif cons is None:
        raise UsageError(f"{model} uses conservation ({config.conservation!r} mode): pass --cons (or set "
                         "EPIFORMER_CONS), or --no-cons to run it on all-zero conservation")
    else:
        cons = Path(cons)
        conservation = open_conservation(cons, genome, str(fasta))
    return ModelInputs(genome, conservation, loaded, fasta, cons, model)


def open_conservation(path: Path, genome: "Genome", genome_label: str,
                      chroms: Optional[Sequence[str]] = None, clip: bool = True) -> "BigWig":
    """Open a conservation bigWig bound to the genome's names; one warning names the chromosomes
    of ``chroms`` (default all of the genome's) it lacks, which read as 0.

    ``clip``: values outside [0, 1] are clipped on reading, with one warning (``prepare`` clips
    and counts them itself while quantising).
    """
    from epiformer_cli.io.bigwig import BigWig

    # clipped to [0, 1] as the training store clips it: the model never saw other values
    track = BigWig(path, "conservation bigWig", value_range=(0.0, 1.0) if clip else None)
    names = list(chroms) if chroms is not None else list(genome.chroms)
    bound = track.bind(names, genome_label, genome.chrom_sizes)
    lacking = [c for c in names if c not in bound]
    if lacking:
        log.warning("%s has no conservation for %d chromosome(s) (%s%s): read as 0", path, len(lacking),
                    ", ".join(lacking[:5]), ", ..." if len(lacking) > 5 else "")
    return track
