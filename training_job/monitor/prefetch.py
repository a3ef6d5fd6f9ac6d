"""An iterator's items computed on a thread ahead of its consumer."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from queue import Full, Queue
from typing import Any, TypeVar

T = TypeVar("T")

_DONE = object()


def ahead(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """What `items` yields, computed on a thread up to `depth` items ahead of the caller.
    An exception in `items` is raised here; a caller that stops early stops the thread."""
    queue: Queue[tuple[Any, BaseException | None]] = Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any, error: BaseException | None = None) -> bool:
        while not stop.is_set():
            try:
                queue.put((item, error), timeout=0.1)
                return True
            except Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as error:  # handed to the caller, who raises it
            put(_DONE, error)
            return
        put(_DONE)

    thread = threading.Thread(target=work, name="monitor-prepare", daemon=True)
    thread.start()
    try:
        while True:
            item, error = queue.get()
            if item is _DONE:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()
