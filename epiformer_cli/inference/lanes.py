"""Lanes: a small model's strand views computed at the same time, each on its own CPU thread.

Why: a small model's operations are small (the tiny preset's tower works on 16,384 x 32 floats,
its Transformer on 128 x 64), and OpenMP splits each one across the CPUs, so most of a thread's
time goes to handing work out and waiting at the end of each region: on 2 cores the tiny
preset's variant scoring ran only ~1.25x faster than on one. The two strands of reverse-complement
averaging (and every shift) are independent until they are averaged, so here each view runs
whole on its own thread with one intra-op thread (a *lane*), the lanes side by side: ~1.4x
faster than the same work split op by op (benchmarks/README.md, issue 25). A large model's
operations split well and its views would each hold their own work buffers (~1 GB at full size),
so lanes are used only for models under :data:`LANE_FLOP` a window (:func:`view_lanes`).

The lanes never change what is computed: each view runs the same operations, in the same order, as
it would alone with one thread, and :meth:`~epiformer_cli.inference.engine.InferenceEngine.average_views`
averages the views in their fixed order. So results with lanes equal a ``--threads 1`` run bit for
bit, and do not depend on which lane finished first.

Threads and torch: torch's intra-op thread count is OpenMP's per-thread setting plus one global
number. A lane sets its own (``torch.set_num_threads`` from the lane's thread, after torch's
lazy per-thread set-up), then the caller restores the global number for the main thread. Only with
torch's OpenMP backend (every Linux and Windows CPU build); elsewhere no lanes are made.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import threading
from concurrent.futures import FIRST_EXCEPTION, Future, wait
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: forward FLOPs a window (the engine's estimate) under which views run in lanes:
#: the tiny preset (0.43 GFLOP) gains ~1.4x on 2 cores; the small preset (12 GFLOP) splits its
#: operations across threads well already (2 lanes: 0.98x, measured 2026-12-07).
LANE_FLOP = 2e9


class Lanes:
    """``count`` daemon threads, each computing with ``threads_each`` intra-op threads.

    :meth:`map` runs one call per item, item ``i`` on lane ``i % count``, and returns the results in
    the items' order; the first exception raised in a lane is raised again in the caller. The
    caller's grad and inference modes (thread-local in torch) hold in the lanes too.
    Not re-entrant: one :meth:`map` at a time (the engine's averaging is one caller).
    """

    def __init__(self, count: int, threads_each: int = 1) -> None:
        import torch

        if count < 1 or threads_each < 1:
            raise ValueError("a lane pool needs at least one lane of at least one thread")
        self.count = int(count)
        self.threads_each = int(threads_each)
        caller_threads = torch.get_num_threads()
        self._queues: List[queue.SimpleQueue] = [queue.SimpleQueue() for _ in range(self.count)]
        self._stopping = threading.Event()  # set while the caller waits for its lanes to stop
        ready = threading.Barrier(self.count + 1)
        for i, tasks in enumerate(self._queues):
            threading.Thread(target=self._serve, args=(i, tasks, ready), name=f"epiformer-lane-{i}",
                             daemon=True).start()
        ready.wait()  # every lane has set its own thread count ...
        torch.set_num_threads(caller_threads)  # ... so the global one is the caller's again

    def _serve(self, lane: int, tasks: "queue.SimpleQueue", ready: threading.Barrier) -> None:
        import torch

        _LANE.index = lane
        _LANE.pool = self
        torch.get_num_threads()  # torch's per-thread set-up first, or it would undo the next line later
        torch.set_num_threads(self.threads_each)
        ready.wait()
        while True:
            call, item, modes, done = tasks.get()
            if call is None:
                return
            grad, inference = modes
            try:
                checkpoint()  # a task queued by a caller that has stopped since is not started
                with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                    done.set_result(call(item))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, who raises it
                done.set_exception(exc)

    def map(self, call: Callable[[T], R], items: Sequence[T]) -> List[R]:
        """``[call(item) for item in items]``, the items spread over the lanes.

        When the caller is interrupted while it waits (Ctrl-C, SIGTERM turned into an exception) or a
        lane fails, the other lanes stop at their next :func:`checkpoint` and the exception is raised
        once they have: no lane is left computing while the process exits (a daemon thread stopped
        inside torch's C++ code at exit aborts the process: "terminate called without an active
        exception").
        """
        import torch

        modes = (torch.is_grad_enabled(), torch.is_inference_mode_enabled())
        futures: List[Future] = []
        try:
            for i, item in enumerate(items):
                done: Future = Future()
                futures.append(done)
                self._queues[i % self.count].put((call, item, modes, done))
            while True:
                # short waits: a pending signal is handled between them, and a failed lane is
                # seen at once, not after the lanes before it have finished
                running = wait(futures, timeout=0.25, return_when=FIRST_EXCEPTION).not_done
                failed = [done for done in futures if done.done() and done.exception() is not None]
                if failed:
                    raise failed[0].exception()
                if not running:
                    return [done.result() for done in futures]
        except BaseException:
            self._stopping.set()
            try:
                for done in futures:
                    done.exception()  # waits for the lane's task to end (at its next checkpoint)
            finally:
                self._stopping.clear()
            raise

    def close(self) -> None:
        """Stop the lanes' threads (they are daemons: a process may also just exit)."""
        for tasks in self._queues:
            tasks.put((None, None, None, None))


#: which lane the current thread is (unset outside lanes)
_LANE = threading.local()


def in_lane() -> bool:
    """Whether this thread is a lane (its work may run beside another lane's)."""
    return getattr(_LANE, "index", None) is not None


class LaneStopped(Exception):
    """Raised by :func:`checkpoint` in a lane whose caller has stopped waiting for it."""


def checkpoint() -> None:
    """Where a lane's long task may stop: raises :class:`LaneStopped` in a lane whose caller was
    interrupted (or whose other lane failed); does nothing elsewhere. Call it between units of
    work of a few ms to a second (a window, a batch)."""
    pool = getattr(_LANE, "pool", None)
    if pool is not None and pool._stopping.is_set():
        raise LaneStopped("stopped: the caller was interrupted")


@functools.lru_cache(maxsize=None)
def openmp_backend() -> bool:
    """Whether torch's intra-op parallelism is OpenMP (per-thread thread counts: see the module);
    asked once (torch builds the whole report to say it)."""
    import torch

    return "parallel backend: OpenMP" in torch.__config__.parallel_info()


def lane_plan(flop_per_window: float, views: int, device: "torch.device") -> Optional[Tuple[int, int]]:
    """(lanes, threads each) an engine's views would run on, or None for the usual one view after
    another: a CPU, torch's OpenMP backend, at least two views and two threads, and a model of
    under :data:`LANE_FLOP` forward FLOPs a window. Each lane gets an equal share of the threads."""
    import torch

    threads = torch.get_num_threads()
    if device.type != "cpu" or views < 2 or threads < 2 or flop_per_window >= LANE_FLOP or not openmp_backend():
        return None
    count = min(views, threads)
    return count, threads // count


_POOLS: Dict[Tuple[int, int], Lanes] = {}
_POOLS_LOCK = threading.Lock()


def _forget_pools_in_child() -> None:
    """A forked child has none of its parent's threads: its lanes are made anew when it needs them
    (a pool carried over would wait forever on threads that do not exist)."""
    global _POOLS_LOCK
    _POOLS.clear()
    _POOLS_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools_in_child)


def view_lanes(flop_per_window: float, views: int, device: "torch.device") -> Optional[Lanes]:
    """The lanes for an engine's views (:func:`lane_plan`), made once per process and plan."""
    plan = lane_plan(flop_per_window, views, device)
    if plan is None:
        return None
    with _POOLS_LOCK:
        pool = _POOLS.get(plan)
        if pool is None:
            pool = _POOLS[plan] = Lanes(*plan)
            log.debug("views run in %d lanes of %d thread(s) each", *plan)
        return pool
