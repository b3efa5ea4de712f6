"""The training dataset: windows of a prepared store as (codes, conservation, targets) examples, with
deterministic augmentation, and the batch sampler that orders them for one or many processes.

Every random choice is derived from ``(seed, epoch, window index)`` (augmentation) or
``(seed, epoch)`` (order), never from a worker's RNG state, so a run gives the same batches whatever
the number of DataLoader workers or processes, and a resumed run continues with the very batches the
interrupted one would have seen. Coordinates are 0-based, half-open; bins are 128 bp.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from epiformer_cli.data.encoding import reverse_complement
from epiformer_cli.data.training_store import TrainingStore

#: salt so that the augmentation and the order streams never coincide for the same seed.
_AUGMENT_SALT = 0x5EED_A06
_ORDER_SALT = 0x5EED_0D3


@dataclass(frozen=True)
class Augment:
    """Train-time augmentation: reverse complement with probability ``rc_prob`` and a uniform shift
    of the inputs by ``-max_shift..max_shift`` bp (sequence and conservation move together; the
    targets stay on their 128 bp bins; with RC the targets are reversed too)."""

    rc_prob: float = 0.5
    max_shift: int = 3

    def draw(self, seed: int, epoch: int, index: int) -> Tuple[bool, int]:
        """The (reverse?, shift) of window ``index`` in ``epoch``: a pure function of its arguments."""
        rng = np.random.default_rng([_AUGMENT_SALT, int(seed), int(epoch), int(index)])
        shift = int(rng.integers(-self.max_shift, self.max_shift + 1)) if self.max_shift > 0 else 0
        reverse = bool(rng.random() < self.rc_prob)
        return reverse, shift


class WindowDataset(Dataset):
    """The windows of one split of a :class:`TrainingStore`.

    Items are addressed as ``(epoch, index)`` so that augmentation needs no per-worker state (a
    plain ``int`` index means epoch 0). An item is a dict of

    * ``codes``: (seq_len,) uint8 base codes (A=0 C=1 G=2 T=3 N=4),
    * ``cons``: (seq_len,) float32 conservation in [0, 1],
    * ``targets``: (tracks, out_bins) float32, the window's bins ``crop_bins .. n_bins - crop_bins``
      (what the model predicts),
    * ``index``: the window's row in the split (int64).

    Args:
        store: the prepared store (picklable: workers reopen its memory maps).
        split: ``train``, ``valid`` or ``test``.
        crop_bins: bins dropped from each side of the targets (``ModelConfig.crop_bins``).
        augment: augmentation for training, or None (validation/test: the window as stored).
        seed: the run's seed.
    """

    def __init__(self, store: TrainingStore, split: str, crop_bins: int = 0,
                 augment: Optional[Augment] = None, seed: int = 0) -> None:
        self.store = store
        self.split = split
        self.windows = store.windows(split)
        self.crop_bins = int(crop_bins)
        self.augment = augment
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, item) -> Dict[str, torch.Tensor]:
        epoch, index = item if isinstance(item, tuple) else (0, item)
        index = int(index)
        w = self.windows
        reverse, shift = (False, 0) if self.augment is None else self.augment.draw(self.seed, epoch, index)
        codes, cons, targets = self.store.read_window(int(w.chrom_index[index]), int(w.start[index]),
                                                      int(w.end[index]), shift=shift)
        if reverse:
            codes, cons, targets = reverse_complement(codes, cons, targets)
        if self.crop_bins:
            targets = targets[:, self.crop_bins:targets.shape[1] - self.crop_bins]
        return {
            "codes": torch.from_numpy(np.ascontiguousarray(codes)),
            "cons": torch.from_numpy(np.ascontiguousarray(cons)),
            "targets": torch.from_numpy(np.ascontiguousarray(targets)),
            "index": torch.tensor(index, dtype=torch.int64),
        }


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled window order of ``epoch``: a permutation of ``range(n)`` fixed by (seed, epoch)."""
    return np.random.default_rng([_ORDER_SALT, int(seed), int(epoch)]).permutation(n)


class TrainBatchSampler(Sampler):
    """Yields the micro-batches of this process, as lists of ``(epoch, index)`` items.

    One optimizer step consumes a global batch of ``batch_size * accumulate * world_size`` windows,
    the next slice of the epoch's permutation. Within it, micro-batch ``a`` of rank ``r`` is chunk
    ``r * accumulate + a``: so 2 processes with batch b see exactly the windows (and BatchNorm
    batches) of 1 process with batch b and ``accumulate`` 2. The epoch's last incomplete global
    batch is dropped. Like ``DistributedSampler``, call :meth:`set_epoch` before each epoch; unlike
    it, the order never depends on the world size and an epoch can start at any step (resume).
    """

    def __init__(self, n: int, batch_size: int, accumulate: int = 1, rank: int = 0, world_size: int = 1,
                 seed: int = 0) -> None:
        if batch_size < 1 or accumulate < 1:
            raise ValueError("batch_size and accumulate must be at least 1")
        self.n, self.batch_size, self.accumulate = int(n), int(batch_size), int(accumulate)
        self.rank, self.world_size, self.seed = int(rank), int(world_size), int(seed)
        self.epoch, self.start_step = 0, 0

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.accumulate * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        return self.n // self.global_batch

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Use ``epoch``'s order, starting at optimizer step ``start_step`` of it (to resume)."""
        self.epoch, self.start_step = int(epoch), int(start_step)

    def __len__(self) -> int:
        return max(self.steps_per_epoch - self.start_step, 0) * self.accumulate

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        order = epoch_order(self.n, self.seed, self.epoch)
        b = self.batch_size
        for step in range(self.start_step, self.steps_per_epoch):
            base = step * self.global_batch
            for a in range(self.accumulate):
                chunk = self.rank * self.accumulate + a
                lo = base + chunk * b
                yield [(self.epoch, int(i)) for i in order[lo:lo + b]]


class ShardSampler(Sampler):
    """Evaluation order: windows ``rank, rank + world, ...`` in store order, each exactly once
    (``DistributedSampler`` would pad with repeats, which skews metrics)."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, n, world_size))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)
