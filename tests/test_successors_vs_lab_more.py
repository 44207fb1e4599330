"""DNO and MPO trainers (issue 17) against the exact answers of ``nlhf.lab`` on one-token games.

The set-up of tests/test_successors_vs_lab.py (a logits table over 5 single-token responses
initialised at mu, judged by :class:`nlhf.envs.game_judge.GameJudge`, trained by the real
trainer with 64 responses a step and a fixed seed); the final pi must be within total
variation 0.02 of the lab's target.

DNO (:func:`nlhf.train.dno.run_dno`). Its exact form (:func:`nlhf.lab.successors.dno`, soft
policy iteration pi_t exp(r_t / beta), multiplicative weights with step 1/beta) converges in
the last iterate only where the game has a Condorcet winner; so the game is SPPO's,
``random_game(5, seed=1)`` (response 4 beats every other with probability >= 0.68), and the
target is the vertex e_4 (the lab at beta = 1/3 is within 1e-3 of it after 20 iterations).
20 iterations of 25 steps, K = 4 (16 prompts a step), constant lr 0.1, margin 0. Measured
(seeds 0-4): hard labels, beta = 1: TV 0.0004-0.0007 (seed 0: 0.00045), ~2.5 s a run; soft
labels, beta = 1/3 (seed 0): 0.0012. Control: a margin no pair reaches (0.99) keeps no pair,
so the policy does not move from mu.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_online_vs_lab import PROMPTS, tabular_policy, tv  # tests/ (conftest.py)
from test_successors_vs_lab import BATCH, SPPO_GAME, TOLERANCE, game_judge, loop_settings

from nlhf.lab import random_game
from nlhf.lab.successors import dno
from nlhf.models.tabular import action_probs
from nlhf.train.dno import DNOConfig, run_dno

DNO_GAME = dict(seed=SPPO_GAME["seed"], mu=SPPO_GAME["mu"], iterations=20, steps=25, K=4)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one torch thread (tests/conftest.py)."""


def train_dno(tmp_path, name, beta, label, margin=0.0, iterations=None):
    s = DNO_GAME
    iterations = iterations or s["iterations"]
    tok, judge = game_judge(random_game(5, seed=s["seed"]), 5)
    cfg = DNOConfig(beta=beta, label=label, margin=margin, responses_per_prompt=s["K"], steps_per_iteration=s["steps"],
                    **loop_settings(tmp_path, name, s["steps"] * iterations, 0.1, BATCH // s["K"],
                                    "constant"))  # fmt: skip
    result = run_dno(cfg, model=tabular_policy(s["mu"]), tokenizer=tok, judge=judge, train_prompts=PROMPTS)
    return action_probs(result.policy).numpy(), result


def test_dno_lab_reaches_the_condorcet_winner():
    s = DNO_GAME
    last = dno(random_game(5, seed=s["seed"]), s["mu"], s["iterations"], eta=1 / 3)[-1]
    assert tv(last, np.eye(5)[4]) <= 1e-3


@pytest.mark.parametrize("label, beta", [("hard", 1.0), ("soft", 1 / 3)])
def test_dno_trainer_reaches_the_labs_last_iterate(tmp_path, label, beta):
    s = DNO_GAME
    pi, result = train_dno(tmp_path, label, beta, label)
    assert result.summary["steps"] == s["steps"] * s["iterations"]
    assert result.opponent.iteration == s["iterations"] - 1  # pi_t refreshed at every iteration
    assert tv(pi, np.eye(5)[4]) <= TOLERANCE, f"DNO ({label}): pi={pi.round(4)}"


def test_dno_margin_no_pair_reaches_keeps_the_policy_at_mu(tmp_path):
    pi, result = train_dno(tmp_path, "control", 1.0, "hard", margin=0.99, iterations=2)
    assert result.summary["train"]["kept"] == 0.0
    np.testing.assert_allclose(pi, DNO_GAME["mu"], atol=1e-6)


def test_dno_config_errors_name_the_key():
    from nlhf.config import ConfigError

    for kw, key in ((dict(beta=0.0), "beta"), (dict(margin=1.0), "margin"), (dict(margin=-0.1), "margin"),
                    (dict(responses_per_prompt=1), "responses_per_prompt"), (dict(label="x"), "label"),
                    (dict(steps_per_iteration=0), "steps_per_iteration")):  # fmt: skip
        with pytest.raises(ConfigError, match=key):
            DNOConfig(**kw)
    assert torch.get_num_threads() == 1
