"""nlhf.train: the shared training loop and the trainers built on it.

* :mod:`nlhf.train.config` -- ``OptimConfig``, ``LoopConfig`` (frozen dataclasses);
* :mod:`nlhf.train.loop` -- ``TrainLoop`` (accelerate, loss normalisation across micro-batches
  and processes, schedule, clipping, NaN/inf skipping, evaluation, logs), ``StepOutput``,
  ``StepContext``;
* :mod:`nlhf.train.checkpoint` -- atomic checkpoints and exact resume;
* :mod:`nlhf.train.calibration` -- expected calibration error and reliability plots;
* :mod:`nlhf.train.fit` -- ``nlhf train-pm`` / ``nlhf train-rm`` (preference and reward models);
* :mod:`nlhf.train.cli` -- ``register(subparsers)`` for the command line.

Importing this package imports nothing heavy; torch and accelerate load inside functions.
"""
