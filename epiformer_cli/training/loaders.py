"""The DataLoaders of a training run: how many worker processes, and workers that leave Ctrl-C and
SIGTERM to the training process, which stops them in order."""

from __future__ import annotations

from torch.utils.data import DataLoader, Dataset, Sampler

from epiformer_cli.data.dataset import ShardSampler
from epiformer_cli.training.distributed import DistEnv


def default_workers() -> int:
    """min(4, cpus - 1), or 0 on a single cpu (loading then runs in the training process); cpus:
    those this process may use (affinity and cgroup quota, :func:`~epiformer_cli.threads.usable_cpus`)."""
    from epiformer_cli.threads import usable_cpus

    cpus = usable_cpus().cpus
    return 0 if cpus <= 1 else min(4, cpus - 1)


def train_loader(dataset: Dataset, batch_sampler: Sampler, workers: int, pin_memory: bool) -> DataLoader:
    """The training batches, in ``batch_sampler``'s order; its workers live as long as the loader."""
    args = dict(num_workers=workers, pin_memory=pin_memory, persistent_workers=workers > 0)
    if workers > 0:
        args.update(prefetch_factor=4, worker_init_fn=_worker_leaves_signals_to_main)
    return DataLoader(dataset, batch_sampler=batch_sampler, **args)


def eval_loader(dataset: Dataset, batch_size: int, env: DistEnv, workers: int, pin_memory: bool) -> DataLoader:
    """This process's share of ``dataset`` (every ``world_size``-th window), in batches of ``batch_size``."""
    return DataLoader(dataset, batch_size=batch_size, sampler=ShardSampler(len(dataset), env.rank, env.world_size),
                      num_workers=workers, pin_memory=pin_memory,
                      worker_init_fn=_worker_leaves_signals_to_main if workers > 0 else None)


def _worker_leaves_signals_to_main(worker_id: int) -> None:
    """DataLoader workers ignore SIGINT and SIGTERM; the training process stops them in order.

    Ctrl-C, ``scancel`` or ``kill -- -PGID`` signal every process of the group. A worker killed
    by SIGTERM (torch's own handler in workers re-raises it) made torch raise "DataLoader worker
    ... is killed by signal" in the main process, over or instead of its clean exit 143. A worker
    whose main process dies anyway still exits by itself (torch's watchdog).
    """
    import signal
    import sys

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.excepthook = _quiet_broken_handover


def _quiet_broken_handover(kind, value, tb) -> None:
    """A worker's excepthook: a main process stopped while it fetched a batch leaves the thread
    that hands the batch's shared memory over with a broken connection: expected, not a traceback."""
    import multiprocessing
    import sys

    if issubclass(kind, (EOFError, ConnectionError, multiprocessing.AuthenticationError)):
        return
    sys.__excepthook__(kind, value, tb)
