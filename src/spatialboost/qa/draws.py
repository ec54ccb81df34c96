"""Fast scalar randomness for question synthesis, drawn from numpy generators in blocks.

A conversation makes a few hundred small random choices (which pair, which side to ask, which
template). `np.random.Generator` costs about a microsecond per scalar call and tens of
microseconds to create, which would dominate the synthesis; so every stream here is a block
of uniforms drawn from one generator per scene at once and consumed in order.

    streams = scene_draws(seed, "test-000001", ("words", "probes", "plan"))
    streams["plan"].flip(); streams["plan"].below(3); streams["plan"].shuffled(items)

Streams are independent: each has its own block, and a stream that runs out refills from its
own generator, seeded from (seed, key, stream index, refill count), never from a shared one.
So what one stream consumes never changes another's draws.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")

BLOCK = 256
"""Uniforms per stream and refill; a 10-turn conversation uses one to two hundred."""


class Draws:
    """One stream of uniforms in [0, 1): a pre-drawn block, then refills from generators
    seeded by (refill_seed, refill count)."""

    def __init__(self, first_block: np.ndarray, refill_seed: tuple[int, ...]) -> None:
        self._block: np.ndarray | None = first_block  # made a list on first use (tolist is not free)
        self._buffer: list[float] = []
        self._next = 0
        self._refill_seed = refill_seed
        self._refills = 0

    def random(self) -> float:
        """A uniform in [0, 1)."""
        if self._next == len(self._buffer):
            if self._block is not None:
                self._buffer, self._block = self._block.tolist(), None
                return self.random()
            self._refills += 1
            seed = np.random.SeedSequence(self._refill_seed[0], spawn_key=(*self._refill_seed[1:], self._refills))
            self._buffer = np.random.default_rng(seed).random(BLOCK).tolist()
            self._next = 0
        value = self._buffer[self._next]
        self._next += 1
        return value

    def flip(self) -> bool:
        """True with probability 1/2."""
        return self.random() < 0.5

    def below(self, n: int) -> int:
        """An integer in [0, n), uniformly (n >= 1)."""
        return min(int(self.random() * n), n - 1)

    def choice(self, items: Sequence[T]) -> T:
        """One item, uniformly."""
        return items[self.below(len(items))]

    def shuffled(self, items: Sequence[T]) -> list[T]:
        """The items in a uniformly random order (a new list)."""
        keys = [self.random() for _ in items]
        return [items[i] for i in sorted(range(len(items)), key=keys.__getitem__)]

    def distinct(self, n: int, k: int) -> list[int]:
        """min(k, n) distinct integers of range(n), uniformly, sorted (Floyd's algorithm)."""
        chosen: set[int] = set()
        for j in range(n - min(k, n), n):
            t = self.below(j + 1)
            chosen.add(j if t in chosen else t)
        return sorted(chosen)


def scene_draws(seed: int, key: str, names: Sequence[str]) -> dict[str, Draws]:
    """Independent streams named `names` for one scene; they depend only on (seed, key)."""
    key_hash = zlib.crc32(key.encode())
    blocks = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(key_hash,))).random((len(names), BLOCK))
    return {name: Draws(blocks[i], (seed, key_hash, i)) for i, name in enumerate(names)}
