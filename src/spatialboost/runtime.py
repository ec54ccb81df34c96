"""Process-level torch settings, scoped: nothing here changes state beyond a `with` block; and
the per-process memo that builds models once per worker, one build at a time."""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

import torch

V = TypeVar("V")

_BUILD_LOCK = threading.RLock()
"""One lock for every model build in the process: torch's default dtype is process-wide, and
`from_pretrained(dtype=...)` sets and restores it, so two builds in two threads interleave."""


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `n` for a block, then restored (None: unchanged).

    Small models on a shared 2-core machine run several times faster on one thread (no
    OpenMP spinning); the bootstrap stage, the probes and the training tests use this.
    """
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class BuildOnce(Generic[V]):
    """Build an expensive object (a model, an observer holding models) at most once per key in
    this process, and never two at once.

    Two threads calling `from_pretrained(..., dtype=torch.bfloat16)` together race on torch's
    process-wide default dtype: one restores float32 while the other is still creating
    parameters, which gives a model of mixed bf16/fp32 parameters ("expected scalar type
    BFloat16 but found Float", STACK.md) and can leave the default dtype at bf16. Every build of
    every BuildOnce runs under one process-wide lock, and a value is handed out only after its
    build returned (fully loaded and cast), so a worker's threads share one complete model.

        worker_observer = BuildOnce(build_observer, maxsize=2)
        observer = worker_observer(cfg.extract, cfg.data, cfg.device)   # built once per process
    """

    def __init__(self, build: Callable[..., V], maxsize: int = 2) -> None:
        self._build = build
        self._maxsize = maxsize
        self._values: OrderedDict[tuple[Hashable, ...], V] = OrderedDict()

    def __call__(self, *key: Hashable) -> V:
        with _BUILD_LOCK:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
            value = self._build(*key)
            self._values[key] = value
            while len(self._values) > self._maxsize:  # least recently used first
                self._values.popitem(last=False)
            return value

    def clear(self) -> None:
        """Forget every built value (the next call builds again)."""
        with _BUILD_LOCK:
            self._values.clear()
