"""Who does which piece: ``--shard I/N``, SLURM array tasks and torchrun ranks, parsed in one place.

A long run's pieces go to shards round-robin over the run's piece order (:meth:`Shard.take`), so
every shard gets a mix of chromosomes. :func:`resolve_shard` is the one parser of ``--shard`` and
the SLURM array variables; :class:`Torchrun` the one reader of torchrun's environment;
:func:`place` combines them into this process's :class:`Placement`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Mapping, Optional, Sequence, TypeVar

from epiformer_cli.errors import UsageError

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """Part ``index`` (0-based) of ``count``: the pieces ``i`` with ``i % count == index``.

    Attributes:
        index, count: this part and how many there are.
        source: where it came from (``--shard``, ``SLURM array``, ``torchrun``), for messages.
    """

    index: int = 0
    count: int = 1
    source: str = "--shard"

    @property
    def label(self) -> str:
        """``I/N`` with I 1-based, as the user writes it."""
        return f"{self.index + 1}/{self.count}"

    @property
    def whole(self) -> bool:
        return self.count == 1

    def owns(self, position: int) -> bool:
        return position % self.count == self.index

    def take(self, items: Sequence[T]) -> List[T]:
        """This part's share of ``items`` (in run order): round-robin, so every part gets a mix."""
        return [item for i, item in enumerate(items) if i % self.count == self.index]

    def split(self, rank: int, world: int) -> "Shard":
        """This shard split again between ``world`` processes (torchrun ranks): rank ``rank``'s part."""
        if world <= 1:
            return self
        return Shard(self.index * world + rank, self.count * world, "torchrun" if self.whole else self.source)


@dataclass(frozen=True)
class Torchrun:
    """This process's place under torchrun (rank 0 of 1 without it).

    Attributes:
        rank, world: global rank and the number of processes (``RANK``, ``WORLD_SIZE``).
        local_rank: rank on this node (``LOCAL_RANK``), None when torchrun did not set it.
    """

    rank: int = 0
    world: int = 1
    local_rank: Optional[int] = None

    @classmethod
    def from_environ(cls, environ: Optional[Mapping[str, str]] = None) -> "Torchrun":
        """Read torchrun's variables (malformed ones count as no torchrun)."""
        environ = os.environ if environ is None else environ
        try:
            world = int(environ.get("WORLD_SIZE", "1") or 1)
            rank = int(environ.get("RANK", "0") or 0)
            local = environ.get("LOCAL_RANK")
            return cls(rank, max(1, world), int(local) if local not in (None, "") else None)
        except ValueError:
            return cls()

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes what is written once."""
        return self.rank == 0

    @property
    def node_rank(self) -> int:
        """The rank on this node (``LOCAL_RANK``, or the global rank when torchrun did not say)."""
        return self.rank if self.local_rank is None else self.local_rank


def torchrun_rank(environ: Optional[Mapping[str, str]] = None) -> tuple[int, int, Optional[int]]:
    """(rank, world size, local rank) under torchrun; (0, 1, None) otherwise."""
    t = Torchrun.from_environ(environ)
    return t.rank, t.world, t.local_rank


def resolve_shard(spec: Optional[str], environ: Optional[Mapping[str, str]] = None) -> Shard:
    """``--shard I/N`` (I is 1-based: 1/3, 2/3, 3/3) -> :class:`Shard` ``(I - 1, N)``.

    Without ``spec``, a SLURM array job (``SLURM_ARRAY_TASK_ID`` and ``SLURM_ARRAY_TASK_COUNT``
    set) is shard ``TASK_ID - SLURM_ARRAY_TASK_MIN`` of ``TASK_COUNT``; otherwise the whole run
    (``Shard(0, 1)``). ``--shard 1/1`` turns sharding off inside an array job. Torchrun ranks are
    not included: see :func:`place`.

    Raises:
        UsageError: a malformed spec, or array variables that do not describe a contiguous array.
    """
    environ = os.environ if environ is None else environ
    if spec is None or not str(spec).strip():
        task, count = environ.get("SLURM_ARRAY_TASK_ID"), environ.get("SLURM_ARRAY_TASK_COUNT")
        if not task or not count:
            return Shard()
        try:
            index = int(task) - int(environ.get("SLURM_ARRAY_TASK_MIN", "0") or 0)
            n = int(count)
        except ValueError:
            raise UsageError(f"SLURM_ARRAY_TASK_ID={task!r}/SLURM_ARRAY_TASK_COUNT={count!r} are not integers") from None
        if n < 1 or not 0 <= index < n:
            raise UsageError(f"SLURM array task {task} (min {environ.get('SLURM_ARRAY_TASK_MIN', '0')}) is not one of "
                             f"{count} tasks: use a contiguous --array range or pass --shard I/N")
        return Shard(index, n, "SLURM array") if n > 1 else Shard()
    text = str(spec).strip()
    try:
        i_text, n_text = text.split("/")
        i, n = int(i_text), int(n_text)
    except ValueError:
        raise UsageError(f"--shard must look like I/N (e.g. 2/8), got {text!r}") from None
    if n < 1 or not 1 <= i <= n:
        raise UsageError(f"--shard {text}: I must be between 1 and N (shards are numbered 1/N to N/N)")
    return Shard(i - 1, n, "--shard")


@dataclass(frozen=True)
class Placement:
    """This process's share of a run.

    Attributes:
        shard: the share given by ``--shard`` or the SLURM array (written to the run's records).
        torchrun: the torchrun rank inside it.
        part: the pieces this process computes (``shard`` split again between the ranks).
    """

    shard: Shard
    torchrun: Torchrun

    @property
    def part(self) -> Shard:
        return self.shard.split(self.torchrun.rank, self.torchrun.world)

    @property
    def finishes(self) -> bool:
        """Whether this process writes the run's final output (the whole run, rank 0)."""
        return self.shard.whole and self.torchrun.is_main


def place(spec: Optional[str], environ: Optional[Mapping[str, str]] = None) -> Placement:
    """This process's :class:`Placement` from ``--shard``, the SLURM array and torchrun."""
    environ = os.environ if environ is None else environ
    return Placement(resolve_shard(spec, environ), Torchrun.from_environ(environ))
