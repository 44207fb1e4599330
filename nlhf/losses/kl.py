"""Sampled estimates of KL(pi || mu) for a completion (THEORY.md Sec. 2, 4; Schulman's k1/k3).

For a completion y sampled from the policy pi, with per-token log-ratios
d_n = log pi(y_n | x, y_<n) - log mu(y_n | x, y_<n):

* k1 = sum_n d_n = log pi(y|x) / mu(y|x). Unbiased for the sequence-level KL(pi || mu) when
  y ~ pi; can be negative for one sample.
* k3 = sum_n [exp(-d_n) - 1 + d_n]. Each term is >= 0 and, given the prefix, has mean
  KL(pi(.|x, y_<n) || mu(.|x, y_<n)); their sum is therefore also unbiased for the sequence
  KL when y ~ pi (the chain rule of KL), with lower variance than k1 when pi is near mu.

Both are biased when y is *not* sampled from pi (temperature != 1, top-k/top-p, a mixture
opponent); importance-weight them then (see :func:`nlhf.losses.nash.nash_md_pg_loss`).
Both are metrics here: detached, never part of a gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nlhf.losses.base import check_same_shape, zero_outside


def kl_k1(policy_logps: Tensor, ref_logps: Tensor, mask: Tensor) -> Tensor:
    """k1 = sum_n mask * (log pi_n - log mu_n), detached. Shapes (B, T) -> (B,)."""
    check_same_shape("kl_k1", 2, policy_logps=policy_logps, ref_logps=ref_logps, mask=mask)
    d = zero_outside((policy_logps - ref_logps).detach(), mask)  # (B, T)
    return d.sum(dim=-1)  # (B,)


def kl_k3(policy_logps: Tensor, ref_logps: Tensor, mask: Tensor) -> Tensor:
    """k3 = sum_n mask * (exp(log mu_n - log pi_n) - 1 - (log mu_n - log pi_n)), detached. (B, T) -> (B,)."""
    check_same_shape("kl_k3", 2, policy_logps=policy_logps, ref_logps=ref_logps, mask=mask)
    r = zero_outside((ref_logps - policy_logps).detach(), mask)  # (B, T); 0 contributes exp(0) - 1 - 0 = 0
    return (torch.exp(r) - 1 - r).sum(dim=-1)  # (B,)
