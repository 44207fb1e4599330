"""PPO under inexact sampling (temperature != 1): the first update's expected gradient, by enumeration.

A one-token game: V actions, pi = softmax(theta), mu = softmax(phi), reward r(a). The
regularised objective J(theta) = E_pi r - tau KL(pi || mu) has the exact gradient grad J.
PPO samples k = 2 responses per prompt from q = softmax(theta / T) and takes the step of
:func:`nlhf.train.rlhf.make_step` on them: :func:`ppo_behaviour_terms` (old log-probs,
advantages with the KL penalty, importance weights), then the clipped surrogate summed over
tokens, weighted and averaged over responses. Enumerating all V^k response tuples with
their probability under q gives the expected gradient of that loss, which must be -grad J
(review of issue 13: the old terms, log q as PPO's old log-prob and in the penalty, gave a
relative error of 0.045 at T = 0.9 and 0.26 at T = 0.5).
"""

from __future__ import annotations

import itertools

import pytest
import torch

from nlhf.losses.rlhf import ppo_clip_loss, rlhf_advantages
from nlhf.train.rlhf import ppo_behaviour_terms

TAU, K, CLIP = 0.5, 2, 0.2
THETA = torch.tensor([0.3, -0.7, 1.1], dtype=torch.float64)  # pi's logits
PHI = torch.tensor([0.0, 0.4, -0.2], dtype=torch.float64)  # mu's logits
REWARD = torch.tensor([1.0, 0.2, -0.5], dtype=torch.float64)


def true_gradient() -> torch.Tensor:
    """grad of J(theta) = E_pi r - tau KL(pi || mu), exact."""
    theta = THETA.clone().requires_grad_(True)
    logp, logmu = torch.log_softmax(theta, -1), torch.log_softmax(PHI, -1)
    J = (logp.exp() * REWARD).sum() - TAU * (logp.exp() * (logp - logmu)).sum()
    (g,) = torch.autograd.grad(J, theta)
    return g


def expected_step_gradient(temperature: float, terms) -> torch.Tensor:
    """E_{y_1..y_k ~ q} grad of the mean per-response loss, q = softmax(theta / T), by enumeration."""
    total = torch.zeros_like(THETA)
    q = torch.softmax(THETA / temperature, -1)
    for ys in itertools.product(range(len(THETA)), repeat=K):
        y = torch.tensor(ys)
        theta = THETA.clone().requires_grad_(True)
        logps = torch.log_softmax(theta, -1)[y].unsqueeze(-1)  # (k, 1) with gradient: one-token responses
        sampling = torch.log_softmax(THETA / temperature, -1)[y].unsqueeze(-1)  # (k, 1) log q
        ref = torch.log_softmax(PHI, -1)[y].unsqueeze(-1)  # (k, 1)
        mask = torch.ones(K, 1)
        exact = temperature == 1.0
        old, advantages, weight = terms(logps, None if exact else sampling, ref, mask, REWARD[y], TAU, K)
        loss = ppo_clip_loss(logps, old, advantages, mask, CLIP).loss.sum(-1)  # (k,)
        if weight is not None:
            loss = weight * loss
        (g,) = torch.autograd.grad(loss.mean(), theta)
        total += float(q[y].prod()) * g
    return total


def old_terms(logps, sampling_logps, ref, mask, rewards, tau, k, max_w=None):
    """The terms before the fix: log q as PPO's old log-prob and inside the KL penalty, no weight."""
    old = logps.detach() if sampling_logps is None else sampling_logps
    return old, rlhf_advantages(rewards, old, ref, mask, tau, k), None


@pytest.mark.parametrize("temperature", [1.0, 0.9, 0.5, 1.7])
def test_first_ppo_update_is_unbiased_under_any_temperature(temperature):
    expected, truth = expected_step_gradient(temperature, ppo_behaviour_terms), true_gradient()
    assert torch.allclose(expected, -truth, rtol=1e-9, atol=1e-12), (expected, -truth)


@pytest.mark.parametrize(("temperature", "least_error"), [(0.9, 0.01), (0.5, 0.1)])
def test_the_old_terms_are_biased(temperature, least_error):
    """Negative control: log q as the old log-prob and in the penalty misses the true gradient."""
    expected, truth = expected_step_gradient(temperature, old_terms), true_gradient()
    error = float((expected + truth).norm() / truth.norm())
    assert error > least_error, error


def test_behaviour_terms_by_hand():
    """k = 2, one token each: the penalty uses log pi_old - log mu; the weight is pi_old / q, clipped."""
    logps = torch.tensor([[-0.5], [-1.0]], dtype=torch.float64)
    sampling = torch.tensor([[-0.7], [-0.9]], dtype=torch.float64)
    ref = torch.tensor([[-0.6], [-0.6]], dtype=torch.float64)
    mask = torch.ones(2, 1)
    rewards = torch.tensor([1.0, 0.0], dtype=torch.float64)
    old, adv, w = ppo_behaviour_terms(logps, sampling, ref, mask, rewards, 0.5, 2, max_importance_weight=1.1)
    assert torch.equal(old, logps)
    # penalised: 1 - 0.5 * 0.1 = 0.95 and 0 - 0.5 * (-0.4) = 0.2; leave-one-out: (0.75, -0.75)
    assert torch.allclose(adv, torch.tensor([0.75, -0.75], dtype=torch.float64))
    # pi/q: exp(0.2) = 1.2214 clipped to 1.1, exp(-0.1) = 0.9048
    assert torch.allclose(w, torch.tensor([1.1, 0.904837418], dtype=torch.float64))
    assert ppo_behaviour_terms(logps, None, ref, mask, rewards, 0.5, 2)[2] is None
