"""Offline pairwise losses of the PsiPO family: DPO, IPO, conservative DPO (THEORY.md Sec. 5).

All are pure functions of four (B,) sequence log-probs -- policy and reference, of the chosen
(first) and rejected (second) responses -- made by :func:`nlhf.logprobs.seq_logps`. Whether
those are SUMS or MEANS over tokens is the caller's explicit choice; the losses cannot tell,
and it matters (see :func:`ipo_loss`). Every function returns per-pair losses (B,) and per-pair
metrics in a :class:`~nlhf.losses.base.LossOutput`:

* ``log_ratio_margin``: h (THEORY.md Sec. 0);
* ``reward_margin``: tau * h, the difference of the implicit rewards;
* ``chosen_reward`` / ``rejected_reward``: tau * (log pi - log mu) of each response (DPO's
  implicit rewards; TRL's ``rewards/chosen`` and ``rewards/rejected``);
* ``accuracy``: 1 where the policy's implicit preference agrees with the label (h > 0 for a
  hard label 1), 0 where it disagrees, 1/2 for a label of exactly 1/2 or h = 0.

No KL is reported: offline pairs are not samples of the policy, so no unbiased KL estimate
can be formed from them (the trainer measures KL on its own samples).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from nlhf.losses.base import LossOutput, check_probabilities, check_same_shape, check_tau


def log_ratio_margin(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
) -> Tensor:
    """h(y_w, y_l) = log[ pi(y_w) mu(y_l) / (pi(y_l) mu(y_w)) ] (THEORY.md Sec. 0; PsiPO Eq. 17). (B,) each -> (B,)."""
    check_same_shape(
        "log_ratio_margin",
        1,
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
    )
    return (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)  # (B,)


def _pairwise_metrics(
    h, policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, tau, labels=None
) -> dict[str, Tensor]:
    h = h.detach()  # (B,)
    if labels is None:
        accuracy = (h > 0).to(h.dtype) + 0.5 * (h == 0).to(h.dtype)
    else:
        side = torch.sign(labels.detach().to(h.dtype) - 0.5)  # (B,) +1: chosen preferred, -1: rejected
        agree = torch.sign(h) * side  # (B,) +1 agree, -1 disagree, 0 undecided
        accuracy = 0.5 * (agree + 1)
    return {
        "log_ratio_margin": h,
        "reward_margin": tau * h,
        "chosen_reward": tau * (policy_chosen_logps - ref_chosen_logps).detach(),
        "rejected_reward": tau * (policy_rejected_logps - ref_rejected_logps).detach(),
        "accuracy": accuracy,
    }


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    tau: float,
) -> LossOutput:
    """DPO: -log sigmoid(tau h(y_w, y_l)) per pair (THEORY.md Sec. 5; PsiPO Sec. 4.2, DPO Eq. 7).

    Psi = logit under Bradley-Terry. Deterministic preferences make the optimum degenerate:
    the loss only reaches 0 as h -> inf, so the loser's probability is driven to 0 whatever
    tau (THEORY.md Sec. 5). tau is TRL's ``beta``.

    Shapes: four (B,) sequence log-probs -> loss (B,).
    Gradient: d loss / d h = -tau sigmoid(-tau h).
    """
    tau = check_tau(tau, "dpo_loss")
    h = log_ratio_margin(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
    )  # (B,)
    loss = -F.logsigmoid(tau * h)  # (B,)
    metrics = _pairwise_metrics(
        h, policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, tau
    )
    return LossOutput(loss=loss, metrics=metrics)


def cdpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    tau: float,
    label_smoothing: float,
) -> LossOutput:
    """Conservative DPO (label smoothing eps): -(1 - eps) log sigmoid(tau h) - eps log sigmoid(-tau h).

    (THEORY.md Sec. 5; Mitchell, "A note on DPO with noisy preferences", 2023.) It is the
    cross-entropy of the DPO model sigmoid(tau h) against a soft label 1 - eps: the labels
    are assumed flipped with probability eps, and the optimum is the finite margin
    tau h = log((1 - eps) / eps) instead of infinity. eps = 0 is :func:`dpo_loss`.

    This is exactly the cDPO formula of Mitchell's note (Eq. 3, https://ericmitchell.ai/cdpo.pdf),
    as OpenRLHF's ``DPOLoss`` writes it. It is NOT what TRL 1.16's ``DPOTrainer`` computes
    with ``loss_type="sigmoid"``: that loss ignores ``label_smoothing`` (plain DPO); TRL's
    ``"robust"`` is a different loss (the unbiased correction that divides by 1 - 2 eps;
    docs/PEERS.md). Hand example (``tests/losses/test_pairwise_losses.py``): tau h = log 3,
    eps = 0.1: -0.9 log 0.75 - 0.1 log 0.25 = 0.397543.

    Shapes: four (B,) sequence log-probs -> loss (B,).
    """
    tau = check_tau(tau, "cdpo_loss")
    if not 0 <= label_smoothing < 0.5:
        raise ValueError(f"cdpo_loss: label_smoothing must be in [0, 0.5), got {label_smoothing!r}")
    h = log_ratio_margin(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
    )  # (B,)
    loss = -(1 - label_smoothing) * F.logsigmoid(tau * h) - label_smoothing * F.logsigmoid(-tau * h)  # (B,)
    metrics = _pairwise_metrics(
        h, policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, tau
    )
    return LossOutput(loss=loss, metrics=metrics)


def ipo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    tau: float,
    labels: Tensor | None = None,
) -> LossOutput:
    """Sampled IPO loss (THEORY.md Sec. 5; PsiPO Eq. 17): (h - (p - 1/2) / tau)^2 per pair.

    ``labels`` p = P(chosen > rejected) in [0, 1] (soft labels honoured); None means p = 1,
    i.e. Eq. 17's (h - 1/(2 tau))^2. With a soft label the loss folds in both orderings of
    the pair: p (h - 1/(2 tau))^2 + (1 - p)(-h - 1/(2 tau))^2 = (h - (p - 1/2)/tau)^2
    + p(1 - p)/tau^2, so the gradients agree and only the constant is dropped.
    Optimum: pi(y) proportional to mu(y) exp(p*(y > nu)/tau) (unique, regularised even for
    deterministic preferences). Gradient: d loss / d h = 2 (h - (p - 1/2)/tau).

    What tau means depends on the reduction that made the log-probs (the caller's choice):
    with SUM log-probs, h is the sequence-level log-ratio margin and tau the KL strength of
    THEORY.md (OpenRLHF's convention); with MEAN (per-token) log-probs, as in TRL, h is a
    margin of average per-token log-ratios, so for completions of about L tokens mean-IPO
    at tau behaves like sum-IPO at tau / L (weaker regularisation for longer answers), with
    the loss scaled by 1/L^2, and no longer the exact optimum above when lengths differ.

    Shapes: four (B,) sequence log-probs, labels (B,) or None -> loss (B,).
    """
    tau = check_tau(tau, "ipo_loss")
    h = log_ratio_margin(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps
    )  # (B,)
    if labels is None:
        target = torch.full_like(h, 0.5 / tau)  # (B,)  1/(2 tau)
    else:
        check_same_shape("ipo_loss", 1, log_ratio_margin=h, labels=labels)
        check_probabilities("ipo_loss", "labels", labels)
        target = (labels.to(h.dtype) - 0.5) / tau  # (B,)
    loss = (h - target) ** 2  # (B,)
    metrics = _pairwise_metrics(
        h, policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, tau, labels
    )
    return LossOutput(loss=loss, metrics=metrics)
