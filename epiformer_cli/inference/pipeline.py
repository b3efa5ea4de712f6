"""Background reader and writer threads, so the compute device only ever waits on the model.

A :class:`Prefetcher` runs an input generator (FASTA + bigWig reads, batch assembly) on its own
thread, a bounded queue ahead of the consumer; a :class:`BackgroundWriter` runs an output function
(store chunk files) on another. Memory stays bounded by the queue depths, whatever the genome size.
An exception on either thread is re-raised on the calling thread at the next hand-over.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Generic, Iterable, Iterator, Optional, TypeVar

T = TypeVar("T")

_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Prefetcher(Generic[T]):
    """Iterate ``source`` on a background thread, ``depth`` items ahead of the consumer.

    Use as an iterator (``for item in Prefetcher(gen())``); call :meth:`close` (or use it as a
    context manager) to stop the thread early, e.g. when the consumer fails.
    """

    def __init__(self, source: Iterable[T], depth: int = 3, name: str = "epiformer-reader") -> None:
        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._source = source
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._source:
                if not self._put(item):
                    return
            self._put(_DONE)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._put(_Failure(exc))

    def __iter__(self) -> Iterator[T]:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> "Prefetcher[T]":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class BackgroundWriter:
    """Call ``sink(item)`` for each submitted item on a background thread, in submission order.

    :meth:`submit` blocks when ``depth`` items are waiting (back-pressure bounds memory) and
    re-raises a failure of the sink; :meth:`finish` drains the queue and re-raises too.
    """

    def __init__(self, sink: Callable[[Any], None], depth: int = 4, name: str = "epiformer-writer") -> None:
        self._sink = sink
        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=max(1, depth))
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if self._error is not None:
                continue  # drain without work after a failure
            try:
                self._sink(item)
            except BaseException as exc:
                self._error = exc

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, item: Any) -> None:
        self._check()
        while True:
            try:
                self._queue.put(item, timeout=0.1)
                break
            except queue.Full:
                self._check()
                if not self._thread.is_alive():
                    raise RuntimeError("the background writer stopped unexpectedly")

    def finish(self) -> None:
        """Wait until every submitted item is written; re-raise a failure of the sink."""
        self._queue.put(_DONE)
        self._thread.join()
        self._check()

    def abort(self) -> None:
        """Stop after the item in progress (on an error elsewhere); pending items are dropped."""
        self._error = self._error or RuntimeError("aborted")
        while self._thread.is_alive():
            try:
                self._queue.put(_DONE, timeout=0.1)
                break
            except queue.Full:
                continue  # the thread drains without work once an error is set
        self._thread.join()
