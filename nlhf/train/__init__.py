"""nlhf.train: the shared training loop and one file per algorithm family on it.

The trainers (config, step and run wiring of each family in one file; none imports another):

* :mod:`nlhf.train.dpo` -- offline DPO / IPO / cDPO (``nlhf train dpo|ipo|cdpo``), with its
  pairs (:mod:`nlhf.train.dpo_data`), reference log-prob cache (:mod:`nlhf.train.ref_cache`)
  and pair forwards (:mod:`nlhf.train.pair_logps`);
* :mod:`nlhf.train.nash_md` -- Nash-MD-PG, self-play, best response, Nash-EMA;
* :mod:`nlhf.train.online_ipo` -- online IPO, IPO-MD;
* :mod:`nlhf.train.rlhf` -- RLHF policy gradient and PPO against a reward model;
* :mod:`nlhf.train.sppo`, :mod:`nlhf.train.inpo`, :mod:`nlhf.train.dno`, :mod:`nlhf.train.mpo`,
  :mod:`nlhf.train.mirror_prox` -- SPPO, INPO, DNO, MPO and Nash mirror prox, in outer iterations
  against a frozen pi_t (:class:`~nlhf.train.rollouts.IterationSnapshot`), every iteration's
  responses and judge values saved under ``iterations/`` (:class:`~nlhf.train.rollouts.IterationData`);
* :mod:`nlhf.train.fit` -- ``nlhf train-pm`` / ``nlhf train-rm`` (preference and reward models).

What they share:

* :mod:`nlhf.train.run` -- set-up and tear-down (output checks, model and policy, the sampling
  trainers' sampler and prompt loop, metrics.json);
* :mod:`nlhf.train.rollouts` -- the pieces of a sampling step (mu's log-probs, KL, per-row outputs,
  within-group judging, the iterative trainers' pi_t snapshot);
* :mod:`nlhf.train.loop` -- ``TrainLoop`` (accumulation, global loss normalisation, clipping,
  NaN/inf skipping), ``StepOutput``, ``StepContext`` (from :mod:`~nlhf.train.step_api`); beside it
  :mod:`~nlhf.train.loop_eval` (evaluation), :mod:`~nlhf.train.optim`, :mod:`~nlhf.train.data_stream`, :mod:`~nlhf.train.metrics_log`,
  :mod:`~nlhf.train.loop_checkpoint` over :mod:`~nlhf.train.checkpoint` (atomic, checksummed
  checkpoints and exact resume), :mod:`~nlhf.train.out_dir`;
* :mod:`nlhf.train.config` -- ``OptimConfig``, ``LoopConfig``, ``PromptRunConfig`` (frozen dataclasses);
* :mod:`nlhf.train.callbacks` -- ``on_step(step, metrics) -> bool`` hooks; :mod:`nlhf.train.model_card` --
  the ``README.md`` model card in every saved model's directory;
* :mod:`nlhf.train.calibration` -- expected calibration error and reliability plots;
* :mod:`nlhf.train.cli` -- ``nlhf train ...``, ``nlhf train-pm``, ``nlhf train-rm``.

Importing this package imports nothing heavy; torch and accelerate load inside functions.
"""
