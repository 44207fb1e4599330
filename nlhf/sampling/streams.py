"""Per-row random streams: what a row samples does not depend on the batch it sits in.

* :func:`splitmix64`, :func:`counter_uniforms`: a counter-based generator (uniform k of
  seed s is a pure function of (s, k));
* :class:`RowGenerator`: one such stream per row of a batch, with sub-streams for each
  sampling call and for rows repeated k times; :class:`RowStream`: one call's streams;
* :func:`row_seeds`, :func:`row_generator`: the trainers' streams, one per prompt row,
  seeded from ``(loop.seed, the row's global data position)``, so a prompt draws the same
  samples however the global batch is split over micro-batches and processes, and a
  resumed run draws the same ones (no sampler state needs saving).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

_GOLDEN = 0x9E3779B97F4A7C15  # SplitMix64's increment (2^64 / golden ratio)
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_UNIFORM_BLOCK = 32  # uniforms computed per row at once (one vectorised hash per block of decode steps)


def _signed64(x: int) -> int:
    """A 64-bit pattern as the int64 value with the same bits."""
    x &= (1 << 64) - 1
    return x - (1 << 64) if x >= 1 << 63 else x


def _shr(x: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 bit patterns (torch's ``>>`` on int64 is arithmetic)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def splitmix64(x: Tensor) -> Tensor:
    """SplitMix64's finaliser on int64 tensors (wrapping arithmetic): a bijective 64-bit hash.

    ``z = (x ^ (x >>> 30)) * 0xBF58476D1CE4E5B9; z = (z ^ (z >>> 27)) * 0x94D049BB133111EB;
    z ^ (z >>> 31)`` (Steele, Lea and Flood 2014; the seeding generator of java.util and
    xoshiro). Elementwise, so a value never depends on the other entries of the tensor.
    """
    z = (x ^ _shr(x, 30)) * _signed64(_MIX1)
    z = (z ^ _shr(z, 27)) * _signed64(_MIX2)
    return z ^ _shr(z, 31)


def counter_uniforms(seeds: Tensor, start: int, count: int) -> Tensor:
    """Uniforms in [0, 1): entry (b, j) is draw ``start + j`` of the SplitMix64 stream seeded ``seeds[b]``.

    Draw k of seed s is ``splitmix64(s + (k + 1) * golden) >>> 11`` times 2^-53 (53 random
    bits, float64), SplitMix64's own sequence. Counter-based: the value is a pure function
    of (seed, k). Shapes: seeds (N,) int64 -> (N, count) float64 on the seeds' device.
    """
    k = torch.arange(start + 1, start + count + 1, dtype=torch.int64, device=seeds.device)  # (count,)
    x = seeds.unsqueeze(-1) + k * _signed64(_GOLDEN)  # (N, count), wrapping
    return _shr(splitmix64(x), 11).to(torch.float64) * (2.0**-53)


def _substream_seeds(seeds: Tensor, index: int) -> Tensor:
    """The seed of sub-stream ``index`` of each row (independent of the row's own stream). (N,) -> (N,)."""
    return splitmix64(splitmix64(seeds ^ _signed64(0x5851F42D4C957F2D * (index + 1))) + _signed64(_GOLDEN))


class RowGenerator:
    """One random stream per row of a batch: what a row samples does not depend on its batch.

    A ``torch.Generator`` hands out uniforms in the order of the rows, so a prompt at another
    row offset (another micro-batch size, another process) gets other uniforms. Here row b
    owns a counter-based SplitMix64 stream seeded by ``seeds[b]`` (:func:`counter_uniforms`):
    decoding step t of a call draws uniform t of that row's stream, so the tokens of a row
    are a function of its seed and its logits only, however rows are batched (trainers seed
    rows by their global data position: :func:`row_generator`).

    Each sampling call (:func:`generate`, :func:`sample_mixture`, ...) takes a fresh
    sub-stream per row (call 0, 1, ...), so successive calls are independent, as with a
    ``torch.Generator``, and a call's draws do not depend on how long the previous call ran.
    :meth:`tile` / :meth:`repeat_interleave` give the rows of a batch whose prompts were
    repeated (the two samples of online IPO, the k samples of RLHF) sub-streams of the
    prompt's seed: block-major and prompt-major layouts give a (prompt, copy) the same stream.
    """

    def __init__(self, seeds: Tensor | Sequence[int], device: Any = None) -> None:
        if not isinstance(seeds, Tensor):
            seeds = torch.tensor([_signed64(int(s)) for s in seeds], dtype=torch.int64)
        if seeds.dim() != 1 or seeds.dtype != torch.int64:
            raise ValueError(
                f"RowGenerator: seeds must be a (N,) int64 tensor, got {tuple(seeds.shape)} {seeds.dtype}"
            )
        self.seeds = seeds.to(device) if device is not None else seeds  # (N,)
        self.calls = 0  # sampling calls made so far

    def __len__(self) -> int:
        return int(self.seeds.shape[0])

    @property
    def device(self) -> torch.device:
        return self.seeds.device

    def tile(self, times: int) -> RowGenerator:
        """Streams for a batch stacked ``times`` times (block-major): row ``j N + b`` is copy j of row b."""
        return RowGenerator(torch.cat([_substream_seeds(self.seeds, j) for j in range(times)]))

    def repeat_interleave(self, times: int) -> RowGenerator:
        """Streams for rows repeated ``times`` times (prompt-major): row ``b times + j`` is copy j of row b."""
        copies = torch.stack([_substream_seeds(self.seeds, j) for j in range(times)], dim=1)  # (N, times)
        return RowGenerator(copies.reshape(-1))

    def stream(self, rows: int, where: str = "sample") -> RowStream:
        """The next call's streams for ``rows`` rows: ``len(self)`` rows, or ``2 len(self)`` (rows
        ``[0, N)`` and ``[N, 2N)`` on two independent sub-streams, for a call that samples two
        responses per prompt in one loop)."""
        n = len(self)
        call = self.calls
        self.calls += 1
        seeds = _substream_seeds(self.seeds, 1000 + call)  # (N,)
        if rows == n:
            return RowStream(seeds)
        if rows == 2 * n:
            return RowStream(torch.cat([_substream_seeds(seeds, 0), _substream_seeds(seeds, 1)]))
        raise ValueError(f"{where}: the RowGenerator has {n} row streams for a batch of {rows} rows")


class RowStream:
    """The streams of one sampling call: :meth:`next_uniforms` returns each row's next uniform."""

    def __init__(self, seeds: Tensor) -> None:
        self.seeds = seeds  # (N,) int64
        self.draws = 0
        self._block = torch.empty(0)  # (N, _UNIFORM_BLOCK) uniforms of draws [block_start, block_start + 32)
        self._block_start = 0

    def next_uniforms(self, rows: int) -> Tensor:
        """(N,) float64: draw ``self.draws`` of every row's stream; advances the counter."""
        if rows != self.seeds.shape[0]:
            raise ValueError(f"RowStream: {self.seeds.shape[0]} row streams for {rows} rows")
        j = self.draws - self._block_start
        if self._block.numel() == 0 or j >= _UNIFORM_BLOCK:
            self._block_start, j = self.draws, 0
            self._block = counter_uniforms(self.seeds, self.draws, _UNIFORM_BLOCK)  # (N, 32)
        self.draws += 1
        return self._block[:, j]


def row_seeds(seed: int, ctx: Any) -> list[int]:
    """One sampling seed per row of a micro-batch, from ``(seed, the row's global stream position)``.

    ``ctx``: the loop's :class:`~nlhf.train.loop.StepContext`. Training: positions are unique
    over the run and independent of how the global batch is split, so a prompt draws the
    same samples with 1 process x micro-batch 2b as with 2 processes x b, and a resumed run
    the same ones. Evaluation: ``(seed, step, dataset index)`` in a separate stream. Seeds
    are 63-bit integers from numpy's ``SeedSequence`` (well mixed even for consecutive positions).
    """
    base = [seed % 2**63]
    if ctx.training:
        words = [[*base, 0, q] for q in ctx.positions]
    else:
        words = [[*base, 1, ctx.step, i] for i in ctx.indices]
    return [int(np.random.SeedSequence(w).generate_state(1, dtype=np.uint64)[0] >> 1) for w in words]


def row_generator(seed: int, ctx: Any, device: Any) -> RowGenerator:
    """A :class:`RowGenerator` on ``device`` with the rows' :func:`row_seeds`."""
    return RowGenerator(row_seeds(seed, ctx), device=device)


__all__ = [
    "RowGenerator",
    "RowStream",
    "counter_uniforms",
    "row_generator",
    "row_seeds",
    "splitmix64",
]
