"""``nlhf demo``: NLHF end to end on a real language model, scored by a known truth (issue 6, 14).

Five stages, each printed as one status line with its time (tqdm bars inside the long ones),
everything written into one run directory (:func:`nlhf.demo.run.run_demo`):

1. **model and environment**: the policy's base model mu (``model``: SmolLM2-135M-Instruct
   by default, ``"tiny"`` for tests) and the cyclic rater-population oracle P*
   (:func:`nlhf.envs.default_rater_population`, THEORY.md Sec. 7);
2. **reference samples and oracle labels**: ``samples_per_prompt`` responses of mu to each
   training prompt, pairs of them labelled by ``raters_per_pair`` simulated raters
   (Bernoulli(P*) draws; the label is their mean), split BY PROMPT into a training and a
   held-out slice; mu's class distribution and the exact class-level analysis of the cyclic
   environment and of the Bradley-Terry control;
3. **judges**: the pairwise preference model and the Bradley-Terry reward model trained on
   the training slice (:func:`nlhf.train.fit.run_fit`), scored on the held-out slice;
4. **policies** (LoRA, a fresh base model per trainer): Nash-MD-PG against the preference
   model with ``nash_responses`` responses per prompt (:mod:`nlhf.train.nash_md`), RLHF
   against the reward model (:mod:`nlhf.train.rlhf`), offline IPO on the labelled pairs
   (:mod:`nlhf.train.dpo`);
5. **tournament** under the ORACLE on the held-out prompts (never seen in training nor in
   any choice of hyper-parameter), and the report: win rates with prompt-clustered t
   intervals, the plug-in class-level win rates, KL, exploitability, each policy against its
   exact class-level target, and the two claims, each checked against its own interval:
   (i) Nash-MD beats the reference (interval above 1/2); (ii) Nash-MD is less exploitable
   than RLHF (the paired difference's interval below 0).

Modules: :mod:`~nlhf.demo.config` (:class:`DemoConfig`, ``--quick``), :mod:`~nlhf.demo.stages`
(one function per stage's work), :mod:`~nlhf.demo.report` (claims, targets, report
sections), :mod:`~nlhf.demo.run` (the straight-line wiring), :mod:`~nlhf.demo.cli` (the
command). ``nlhf demo --lab`` runs :func:`nlhf.lab.showcase.run_lab_showcase` instead.
Importing the package is cheap: torch, transformers and matplotlib load inside functions.
"""

from __future__ import annotations

from nlhf.demo.cli import cmd_demo, register
from nlhf.demo.config import QUICK, DemoConfig, load_demo_config
from nlhf.demo.report import class_targets, evaluate_claims
from nlhf.demo.run import run_demo
from nlhf.demo.stages import label_pairs, lora_settings, pick_prompts, sample_responses, split_pairs_by_prompt
from nlhf.lab.showcase import run_lab_showcase

__all__ = [
    "QUICK",
    "DemoConfig",
    "class_targets",
    "cmd_demo",
    "evaluate_claims",
    "label_pairs",
    "load_demo_config",
    "lora_settings",
    "pick_prompts",
    "register",
    "run_demo",
    "run_lab_showcase",
    "sample_responses",
    "split_pairs_by_prompt",
]
