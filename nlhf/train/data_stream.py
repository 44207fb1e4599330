"""The loop's data stream: a seeded permutation per epoch, read by position.

Position ``q`` of the stream is example ``epoch_permutation(n, seed, q // n)[q % n]``. One
optimiser step consumes ``G = b * grad_accum_steps * processes`` positions; micro-batch
``m`` of process ``r`` reads positions ``P + m * (b * processes) + r * b + [0, b)``
(:func:`micro_batch_positions`), ``P`` the positions consumed by earlier steps. The
position alone fixes the data, so a resumed run reads exactly what an uninterrupted one
would, and a prompt's position (which seeds its random stream) does not depend on how the
global batch is split.
"""

from __future__ import annotations

from functools import lru_cache

from nlhf.config import ConfigError


@lru_cache(maxsize=4)
def epoch_permutation(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    """The order of the ``n`` training examples in ``epoch``: a permutation drawn from ``(seed, epoch)``."""
    import numpy as np

    return tuple(int(i) for i in np.random.default_rng([seed, epoch]).permutation(n))


def stream_indices(n: int, seed: int, start: int, count: int) -> list[int]:
    """Dataset indices at positions ``start .. start + count - 1`` of the data stream.

    The stream is epoch 0's permutation, then epoch 1's, and so on; position ``q`` is
    example ``epoch_permutation(n, seed, q // n)[q % n]``. No worker processes, no hidden
    RNG: the position alone fixes the data, which is what makes resume exact.
    """
    return [epoch_permutation(n, seed, q // n)[q % n] for q in range(start, start + count)]


def micro_batch_positions(
    consumed: int, micro_step: int, micro_batch_size: int, processes: int, rank: int
) -> range:
    """The stream positions of process ``rank``'s share of micro-batch ``micro_step`` of the current step."""
    start = consumed + micro_step * micro_batch_size * processes + rank * micro_batch_size
    return range(start, start + micro_batch_size)


def run_length(max_steps: int | None, epochs: float | None, n_train: int, global_batch: int) -> int:
    """Optimiser steps of a run: ``max_steps``, else the whole global batches in ``epochs`` (default 1) epochs."""
    if max_steps is not None:
        return max_steps
    steps = int((epochs or 1.0) * n_train // global_batch)
    if steps < 1:
        raise ConfigError(
            f"loop.epochs: {epochs or 1.0} epoch(s) of {n_train} examples is less than one "
            f"global batch of {global_batch} (micro_batch_size x grad_accum_steps x processes)"
        )
    return steps


__all__ = ["epoch_permutation", "micro_batch_positions", "run_length", "stream_indices"]
