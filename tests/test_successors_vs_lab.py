"""The iterative trainers (SPPO, INPO; issue 17) against the exact answers of ``nlhf.lab`` on one-token games.

The set-up of tests/test_online_vs_lab.py: a logits table over n single-token responses
(:class:`nlhf.models.tabular.TabularLM`, one prompt "x", max_new_tokens 1, temperature 1)
initialised at mu, judged by :class:`nlhf.envs.game_judge.GameJudge`, trained by the real
trainer (sampler, judge, log-probs, loss, the shared loop, fused AdamW) with 64 responses a
step and a fixed seed. The final pi = softmax(theta) must be within total variation 0.02 of
the lab's target.

SPPO (:func:`nlhf.train.sppo.run_sppo`). Its exact form, multiplicative weights on
P(. > pi_t) (:func:`nlhf.lab.successors.sppo`), converges in the LAST ITERATE only where the
game has a pure equilibrium; on an interior one it cycles and only the average converges
(THEORY.md Sec. 8.1), and the trainer's average is not a policy one can sample. So the game
here is ``random_game(5, seed=1)``, whose response 4 is a Condorcet winner (it beats every
other response with probability >= 0.68): the lab's SPPO from mu = (0.35, 0.25, 0.2, 0.12,
0.08) at eta = 3 reaches the vertex e_4 (TV 1e-4 after 20 iterations), and that vertex is the
target. 20 outer iterations of 25 steps (K = 4 responses a prompt, 16 prompts a step,
constant lr 0.1: at the vertex every sample is response 4, its win rate is exactly 1/2 and
the gradient noise vanishes). Measured: TV 0.0017-0.0024 to e_4 over seeds 0-4, ~3 s a run.
Two controls: ONE iteration of the same 500 steps (pi_t never refreshed) ends at the exact
minimiser of SPPO's expected square loss (computed here by BFGS; TV 0.006 with a cosine
schedule), far from e_4 (TV 0.86): the outer iterations, not the loss alone, reach the target.

INPO (:func:`nlhf.train.inpo.run_inpo`). Its exact form (:func:`nlhf.lab.successors.inpo`,
mirror descent with KL to mu and to pi_t) converges in the last iterate to pi*_tau =
``regularized_nash(game, mu, tau)``: the target. The game of tests/test_online_vs_lab.py,
``random_game(5, seed=80)``, mu = (0.35, 0.25, 0.2, 0.12, 0.08), tau = 0.15 (pi*_tau is interior
and >= 0.12 in TV from the Nash-MD-PG and RLHF targets there); eta = 3 (eta tau = 0.45; the lab
is within 2e-4 of pi*_tau after 20 iterations). 20 iterations of 50 steps, 32 pairs a step,
lr 0.03 cosine-decayed to 0 over the run (the pair sampling's noise stays at pi*_tau, so the
schedule freezes it). Measured: TV 0.0094 (seed 0, the test), 0.0085-0.0143 over seeds 0-4,
~6 s a run; at constant lr 0.1 and 25 steps an iteration, 0.045 (the noise).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_online_vs_lab import PROMPTS, tabular_policy, tv  # tests/ (conftest.py)

from nlhf.envs.game_judge import GameJudge
from nlhf.lab import random_game, regularized_nash
from nlhf.lab.successors import inpo, sppo
from nlhf.models.tabular import action_probs, tabular_tokenizer
from nlhf.sampling import SamplingConfig
from nlhf.train.config import LoopConfig, OptimConfig
from nlhf.train.inpo import INPOConfig, run_inpo
from nlhf.train.sppo import SPPOConfig, run_sppo

BATCH = 64  # responses per optimiser step
SEED = 0
TOLERANCE = 0.02  # total variation

SPPO_GAME = dict(seed=1, mu=np.array([0.35, 0.25, 0.2, 0.12, 0.08]), eta=3.0, iterations=20, steps=25, K=4)
INPO_GAME = dict(
    seed=80, mu=np.array([0.35, 0.25, 0.2, 0.12, 0.08]), tau=0.15, eta=3.0, iterations=20, steps=50
)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one torch thread (tests/conftest.py)."""


def game_judge(game, n):
    tok = tabular_tokenizer(tuple("abcde"[:n]))
    return tok, GameJudge(game, list(range(n)), tok)


def loop_settings(tmp_path, name, steps, lr, micro_batch_size, schedule):
    return dict(
        out=str(tmp_path / name),
        sampling=SamplingConfig(max_new_tokens=1, temperature=1.0),
        optim=OptimConfig(lr=lr, max_grad_norm=0.0, schedule=schedule, min_lr_ratio=0.0),
        loop=LoopConfig(seed=SEED, max_steps=steps, micro_batch_size=micro_batch_size, log_every=10**6,
                        progress=False, tensorboard=False, save_every=0, min_free_disk_mb=1),
    )  # fmt: skip


def train_sppo(tmp_path, name, steps_per_iteration, iterations, lr, schedule="constant"):
    s = SPPO_GAME
    game = random_game(5, seed=s["seed"])
    tok, judge = game_judge(game, 5)
    cfg = SPPOConfig(eta=s["eta"], responses_per_prompt=s["K"], steps_per_iteration=steps_per_iteration,
                     **loop_settings(tmp_path, name, steps_per_iteration * iterations, lr, BATCH // s["K"],
                                     schedule))  # fmt: skip
    result = run_sppo(cfg, model=tabular_policy(s["mu"]), tokenizer=tok, judge=judge, train_prompts=PROMPTS)
    return action_probs(result.policy).numpy(), result


def sppo_square_loss_minimizer(game, pi_t, eta):
    """argmin over softmax policies of sum_y pi_t(y) (log pi(y)/pi_t(y) - eta (P(y > pi_t) - 1/2))^2 (BFGS)."""
    from scipy.optimize import minimize

    P = np.asarray(game.P)
    target = eta * (P @ pi_t - 0.5)

    def loss(theta):
        log_pi = theta - np.log(np.exp(theta).sum())
        return float((pi_t * (log_pi - np.log(pi_t) - target) ** 2).sum())

    theta = minimize(loss, np.log(pi_t), method="BFGS", options={"gtol": 1e-12}).x
    return np.exp(theta) / np.exp(theta).sum()


def test_the_sppo_game_has_a_condorcet_winner_that_the_lab_reaches():
    s = SPPO_GAME
    P = np.asarray(random_game(5, seed=s["seed"]).P)
    assert min(P[4, j] for j in range(4)) >= 0.68  # response 4 beats every other one
    last = sppo(random_game(5, seed=s["seed"]), s["mu"], s["iterations"], s["eta"])[-1]
    assert tv(last, np.eye(5)[4]) <= 1e-3
    assert tv(s["mu"], np.eye(5)[4]) >= 0.9  # and training starts far from it


def test_sppo_trainer_reaches_the_labs_last_iterate(tmp_path):
    s = SPPO_GAME
    pi, result = train_sppo(tmp_path, "sppo", s["steps"], s["iterations"], lr=0.1)
    assert result.summary["steps"] == s["steps"] * s["iterations"]
    assert result.opponent.iteration == s["iterations"] - 1  # pi_t refreshed at every iteration
    assert tv(pi, np.eye(5)[4]) <= TOLERANCE, f"SPPO: pi={pi.round(4)}"


def test_one_sppo_iteration_reaches_its_square_loss_minimizer_not_the_target(tmp_path):
    s = SPPO_GAME
    pi, _ = train_sppo(tmp_path, "one", s["steps"] * s["iterations"], 1, lr=0.05, schedule="cosine")
    want = sppo_square_loss_minimizer(random_game(5, seed=s["seed"]), s["mu"], s["eta"])
    assert tv(pi, want) <= TOLERANCE, f"one iteration: pi={pi.round(4)} minimiser={want.round(4)}"
    assert tv(pi, np.eye(5)[4]) > 0.5


def test_inpo_lab_reaches_pi_star_tau():
    s = INPO_GAME
    game = random_game(5, seed=s["seed"])
    want = regularized_nash(game, s["mu"], s["tau"])
    trajectory = inpo(game, s["mu"], s["tau"], s["iterations"], s["eta"])
    assert tv(trajectory[-1], want) <= 1e-3
    assert tv(trajectory[1], want) >= 0.1  # one iteration (pi_t never refreshed) is far from it
    assert tv(s["mu"], want) >= 0.2


def test_inpo_trainer_reaches_pi_star_tau(tmp_path):
    s = INPO_GAME
    game = random_game(5, seed=s["seed"])
    tok, judge = game_judge(game, 5)
    steps = s["steps"] * s["iterations"]
    cfg = INPOConfig(eta=s["eta"], tau=s["tau"], steps_per_iteration=s["steps"],
                     **loop_settings(tmp_path, "inpo", steps, 0.03, BATCH // 2, "cosine"))  # fmt: skip
    result = run_inpo(cfg, model=tabular_policy(s["mu"]), tokenizer=tok, judge=judge, train_prompts=PROMPTS)
    pi = action_probs(result.policy).numpy()
    want = regularized_nash(game, s["mu"], s["tau"])
    assert result.summary["steps"] == steps and result.opponent.iteration == s["iterations"] - 1
    assert tv(pi, want) <= TOLERANCE, f"INPO: pi={pi.round(4)} target={want.round(4)}"


def test_config_errors_name_the_key():
    from nlhf.config import ConfigError

    for kw, key in ((dict(eta=0.0), "eta"), (dict(responses_per_prompt=1), "responses_per_prompt"),
                    (dict(steps_per_iteration=0), "steps_per_iteration")):  # fmt: skip
        with pytest.raises(ConfigError, match=key):
            SPPOConfig(**kw)
    for kw, key in ((dict(eta=0.0), "eta"), (dict(eta=20.0, tau=0.1), "eta"), (dict(tau=0.0), "tau"),
                    (dict(steps_per_iteration=0), "steps_per_iteration")):  # fmt: skip
        with pytest.raises(ConfigError, match=key):
            INPOConfig(**kw)
    assert torch.get_num_threads() == 1
