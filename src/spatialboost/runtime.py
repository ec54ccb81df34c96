"""Process-level torch settings, scoped: nothing here changes state beyond a `with` block."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


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
