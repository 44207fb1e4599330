"""What a reward model cannot do (THEORY.md Sec. 1 and 7; NLHF Sec. 3.2).

Three responses to one prompt in a Condorcet cycle: a > b, b > c, c > a (each with
probability 1). A pairwise preference model f(x, y, y') fits every pair; a Bradley-Terry
reward model cannot: its three logits r_a - r_b, r_b - r_c, r_c - r_a sum to exactly 0, so
at least one is <= 0 and at most 2 of the 3 pairs are right. Its best fit is r_a = r_b =
r_c (P = 1/2 on every pair, log-loss log 2 per pair).
"""

from __future__ import annotations

import math

import torch

from nlhf.models import PairwisePreferenceModel, RewardModel
from nlhf.models.tiny import tiny_causal_lm

PROMPT = "Pick one."
A, B, C = "rock", "paper", "scissors"
# first beats second in every row: a > b, b > c, c > a
FIRSTS, SECONDS = [A, B, C], [B, C, A]
PROMPTS = [PROMPT] * 3


def _fit(model, logit_fn, steps: int = 100, lr: float = 1e-3) -> None:
    """Full fine-tuning with Adam (lr 1e-3, 100 steps fit the cycle for all 30 seeds tried;
    lr 3e-3 or 1e-2 sometimes stall at P = 1/2)."""
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    labels = torch.ones(3)
    model.train()
    for _ in range(steps):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logit_fn(), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def test_preference_model_fits_a_cycle_that_a_reward_model_cannot(tiny_tok):
    torch.manual_seed(0)  # the heads' initialisation
    pm = PairwisePreferenceModel(tiny_causal_lm(tokenizer=tiny_tok, seed=0), tiny_tok)
    enc = pm.encode(PROMPTS, FIRSTS, SECONDS)
    _fit(pm, lambda: pm(enc["input_ids"], enc["attention_mask"]))
    p_pm = pm.prob(PROMPTS, FIRSTS, SECONDS)  # (3,)
    assert (p_pm > 0.9).all(), p_pm
    assert (pm.prob(PROMPTS, SECONDS, FIRSTS) < 0.1).all()  # and the reverse direction by symmetry

    rm = RewardModel(tiny_causal_lm(tokenizer=tiny_tok, seed=0), tiny_tok)
    first = rm.encode(PROMPTS, FIRSTS)
    second = rm.encode(PROMPTS, SECONDS)
    _fit(
        rm,
        lambda: rm.logit(
            first["input_ids"], first["attention_mask"], second["input_ids"], second["attention_mask"]
        ),
    )
    with torch.no_grad():
        logits = rm.logit(
            first["input_ids"], first["attention_mask"], second["input_ids"], second["attention_mask"]
        )
    # the Bradley-Terry logits around a cycle sum to zero, whatever the weights...
    assert abs(float(logits.sum())) < 1e-4
    # ...so the reward model gets at most 2 of the 3 pairs right
    p_rm = rm.prob(PROMPTS, FIRSTS, SECONDS)
    assert int((p_rm > 0.5).sum()) <= 2  # pairwise accuracy <= 2/3
    # and its log-loss cannot go below the tie solution's log 2 per pair; the PM's is far below
    rm_loss = float(-torch.log(p_rm).mean())
    pm_loss = float(-torch.log(p_pm).mean())
    assert rm_loss >= math.log(2) - 1e-4
    assert pm_loss < 0.1
