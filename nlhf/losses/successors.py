"""Losses of Nash-MD's iterative successors: SPPO, INPO (square losses) and DNO (contrastive) (THEORY.md Sec. 8).

SPPO and INPO regress log-ratios against the frozen iterate pi_t (the policy at the start of the
outer iteration) onto targets built from the judge; both take SEQUENCE log-probs (B,)
(sums over the response tokens, :func:`nlhf.logprobs.seq_logps` with ``"sum"``), the
policy's with gradient, pi_t's and mu's as constants. The responses are samples of pi_t
(stop-gradient ids), as in the lab's exact forms (:mod:`nlhf.lab.successors`).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from nlhf.losses.base import LossOutput, check_probabilities, check_same_shape


def _check_eta(eta: float, where: str) -> float:
    eta = float(eta)
    if not (eta > 0 and eta != float("inf")):
        raise ValueError(f"{where}: eta must be a finite number > 0, got {eta!r}")
    return eta


def sppo_loss(policy_logps: Tensor, snapshot_logps: Tensor, win_rate: Tensor, eta: float) -> LossOutput:
    """SPPO's square loss (Wu et al. 2024; THEORY.md Sec. 8.1), one value per response:

        loss_i = ( log pi_theta(y_i|x) - log pi_t(y_i|x) - eta (p_hat_i - 1/2) )^2,

    with y_i ~ pi_t and p_hat_i the judge's estimate of P(y_i > pi_t | x) (in the trainer
    the mean of P(y_i > y_j) over the prompt's other responses y_j ~ pi_t, unbiased given
    y_i). The target eta (p_hat - 1/2) is SPPO's eta (P(y > pi_t) - log Z / eta) with the
    log-partition replaced by eta/2; over tabular policies the expected loss is minimised
    near the multiplicative-weights step pi_t exp(eta (P(. > pi_t) - 1/2)) (up to O(eta^2),
    because log Z is not exactly eta/2): :func:`nlhf.lab.successors.sppo`.

    Shapes: (B,) each -> loss (B,); metrics (B,): ``log_ratio`` = log pi_theta/pi_t,
    ``target`` = eta (p_hat - 1/2), ``win_rate``. Only ``policy_logps`` carries gradient.

    Hand example (tests/losses/test_successor_losses.py): log pi = -1.0, log pi_t = -1.5,
    p_hat = 0.75, eta = 2: log_ratio 0.5, target 0.5, loss 0; p_hat = 0.25: target -0.5,
    loss 1.0, d loss / d log pi = 2 (0.5 + 0.5) = 2.
    """
    eta = _check_eta(eta, "sppo_loss")
    check_same_shape("sppo_loss", 1, policy_logps=policy_logps, snapshot_logps=snapshot_logps,
                     win_rate=win_rate)  # fmt: skip
    check_probabilities("sppo_loss", "win_rate", win_rate)
    log_ratio = policy_logps - snapshot_logps.detach()  # (B,)
    target = eta * (win_rate.detach().to(log_ratio.dtype) - 0.5)  # (B,)
    loss = (log_ratio - target) ** 2
    metrics = {
        "log_ratio": log_ratio.detach(),
        "target": target,
        "win_rate": win_rate.detach().to(loss.dtype),
    }
    return LossOutput(loss=loss, metrics=metrics)


def _anchored_margin(policy_first: Tensor, policy_second: Tensor, anchor_first: Tensor, anchor_second: Tensor,
                     magnet_first: Tensor, magnet_second: Tensor, weight: float) -> Tensor:  # fmt: skip
    """h = log pi(y)/pi(y') - w log rho(y)/rho(y') - (1 - w) log pi_t(y)/pi_t(y'), (B,); gradient through pi only."""
    anchor_margin = (anchor_first - anchor_second).detach()
    magnet_margin = (magnet_first - magnet_second).detach()
    return policy_first - policy_second - weight * magnet_margin - (1.0 - weight) * anchor_margin


def inpo_loss(
    policy_first_logps: Tensor,
    policy_second_logps: Tensor,
    snapshot_first_logps: Tensor,
    snapshot_second_logps: Tensor,
    ref_first_logps: Tensor,
    ref_second_logps: Tensor,
    preference: Tensor,
    eta: float,
    tau: float,
) -> LossOutput:
    """INPO's pairwise square loss (Zhang et al. 2025; THEORY.md Sec. 8.2), one value per pair (y, y') ~ pi_t:

        h = log pi_theta(y)/pi_theta(y') - eta tau log mu(y)/mu(y') - (1 - eta tau) log pi_t(y)/pi_t(y'),
        loss = ( h - eta (P(y > y') - 1/2) )^2,

    P(y > y' | x) from the judge (a soft label). INPO's loss on the judge's ordered pair,
    (h(y_w, y_l) - eta/2)^2, averaged over the label, equals this one plus a constant
    (p (h - eta/2)^2 + (1 - p)(h + eta/2)^2 = (h - eta (p - 1/2))^2 + eta^2 p (1 - p)), so
    both have the same gradient in expectation; the soft label has less variance. Its
    exact tabular minimiser is the mirror-descent step pi_t^(1 - eta tau) mu^(eta tau)
    exp(eta P(. > pi_t)) (:func:`nlhf.lab.successors.inpo_loss_minimizer`); fixed point
    pi*_tau. Needs 0 < eta tau <= 1.

    Shapes: six (B,) sequence log-probs and preference (B,) -> loss (B,); metrics (B,):
    ``h``, ``target`` = eta (P - 1/2), ``preference``. Only the policy's log-probs carry gradient.

    Hand example (tests/losses/test_successor_losses.py): log pi = (-1, -2), log pi_t =
    (-1.5, -1.5), log mu = (-2, -1), eta = 1, tau = 0.5, P = 0.9: h = 1 - 0.5 (-1) - 0.5 (0)
    = 1.5, target 0.4, loss 1.21, d loss / d log pi(y) = 2.2 = -d loss / d log pi(y').
    """
    eta = _check_eta(eta, "inpo_loss")
    tau = float(tau)
    if not (tau > 0 and eta * tau <= 1.0):
        raise ValueError(f"inpo_loss: needs tau > 0 and eta * tau <= 1, got eta={eta!r}, tau={tau!r}")
    check_same_shape("inpo_loss", 1, policy_first_logps=policy_first_logps, policy_second_logps=policy_second_logps,
                     snapshot_first_logps=snapshot_first_logps, snapshot_second_logps=snapshot_second_logps,
                     ref_first_logps=ref_first_logps, ref_second_logps=ref_second_logps,
                     preference=preference)  # fmt: skip
    check_probabilities("inpo_loss", "preference", preference)
    h = _anchored_margin(policy_first_logps, policy_second_logps, snapshot_first_logps, snapshot_second_logps,
                         ref_first_logps, ref_second_logps, eta * tau)  # fmt: skip
    target = eta * (preference.detach().to(h.dtype) - 0.5)  # (B,)
    loss = (h - target) ** 2
    metrics = {"h": h.detach(), "target": target, "preference": preference.detach().to(loss.dtype)}
    return LossOutput(loss=loss, metrics=metrics)


def mirror_pair_loss(
    policy_first_logps: Tensor,
    policy_second_logps: Tensor,
    anchor_first_logps: Tensor,
    anchor_second_logps: Tensor,
    magnet_first_logps: Tensor,
    magnet_second_logps: Tensor,
    payoff_gap: Tensor,
    eta: float,
    tau: float,
) -> LossOutput:
    """One magnetic-mirror step as a pairwise regression (Nash mirror prox; THEORY.md Sec. 8.5), per pair (y, y') ~ pi_t:

        h = log pi_theta(y)/pi_theta(y') - eta tau log rho(y)/rho(y') - (1 - eta tau) log pi_t(y)/pi_t(y'),
        loss = ( h - eta c )^2,

    c in [-1, 1] an unbiased estimate of the payoff gap g(y) - g(y') (:func:`inpo_loss` is
    this with c = P(y > y') - 1/2 and g = P(. > pi_t)). With c = P(y > z) - P(y' > z), z ~ pi',
    the exact tabular minimiser is pi_t^(1 - eta tau) rho^(eta tau) exp(eta P(. > pi')):
    the mirror-prox update against the extrapolated policy pi'. Needs 0 < eta tau <= 1.

    Shapes: six (B,) sequence log-probs and payoff_gap (B,) -> loss (B,); metrics (B,): ``h``, ``target``.

    Hand example (tests/losses/test_dno_loss.py): log pi = (-1, -2), log pi_t = (-1.5, -1.5),
    log rho = (-2, -1), eta = 1, tau = 0.5, c = -0.2: h = 1.5, target -0.2, loss 1.7^2 = 2.89,
    d loss / d log pi(y) = 3.4.
    """
    eta = _check_eta(eta, "mirror_pair_loss")
    tau = float(tau)
    if not (tau > 0 and eta * tau <= 1.0):
        raise ValueError(f"mirror_pair_loss: needs tau > 0 and eta * tau <= 1, got eta={eta!r}, tau={tau!r}")
    check_same_shape("mirror_pair_loss", 1, policy_first_logps=policy_first_logps,
                     policy_second_logps=policy_second_logps, anchor_first_logps=anchor_first_logps,
                     anchor_second_logps=anchor_second_logps, magnet_first_logps=magnet_first_logps,
                     magnet_second_logps=magnet_second_logps, payoff_gap=payoff_gap)  # fmt: skip
    gap = payoff_gap.detach()
    bad = ~((gap >= -1) & (gap <= 1))
    if bool(bad.any()):
        row = int(bad.nonzero()[0])
        raise ValueError(f"mirror_pair_loss: payoff_gap must lie in [-1, 1]; row {row} is {float(gap[row])}")
    h = _anchored_margin(policy_first_logps, policy_second_logps, anchor_first_logps, anchor_second_logps,
                         magnet_first_logps, magnet_second_logps, eta * tau)  # fmt: skip
    target = eta * gap.to(h.dtype)  # (B,)
    return LossOutput(loss=(h - target) ** 2, metrics={"h": h.detach(), "target": target})


def dno_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    snapshot_chosen_logps: Tensor,
    snapshot_rejected_logps: Tensor,
    label: Tensor,
    beta: float,
) -> LossOutput:
    """DNO's contrastive loss (Rosset et al. 2024; THEORY.md Sec. 8.3): DPO with pi_t as the reference.

        h = log pi_theta(y_w)/pi_t(y_w) - log pi_theta(y_l)/pi_t(y_l),
        loss = -( l log sigma(beta h) + (1 - l) log sigma(-beta h) ),

    one value per pair (y_w, y_l) (the best and worst of pi_t's responses by estimated win
    rate), label l = 1 (DNO's hard labels, DPO's loss) or a soft label in [0, 1]. Over
    tabular policies the soft-label loss is minimised at sigma(beta h) = l: with l =
    sigma(r(y_w) - r(y_l)) and r = P(. > pi_t), beta h = r(y_w) - r(y_l), the soft policy
    iteration pi_t exp(r / beta) of :func:`nlhf.lab.successors.dno` (eta = beta).

    Shapes: four (B,) sequence log-probs and label (B,) -> loss (B,); metrics (B,): ``h``,
    ``label``. Only the policy's log-probs carry gradient.

    Hand example (tests/losses/test_dno_loss.py): log pi = (-1, -2), log pi_t = (-1.5, -1.5),
    beta = 2: h = 0.5 - (-0.5) = 1, loss(l = 1) = log(1 + e^-2) = 0.126928, d loss / d log pi(y_w)
    = -2 (1 - sigma(2)) = -0.238406; loss(l = 0.75) = 0.75 (0.126928) + 0.25 (2.126928) = 0.626928.
    """
    beta = float(beta)
    if not (beta > 0 and beta != float("inf")):
        raise ValueError(f"dno_loss: beta must be a finite number > 0, got {beta!r}")
    check_same_shape("dno_loss", 1, policy_chosen_logps=policy_chosen_logps,
                     policy_rejected_logps=policy_rejected_logps, snapshot_chosen_logps=snapshot_chosen_logps,
                     snapshot_rejected_logps=snapshot_rejected_logps, label=label)  # fmt: skip
    check_probabilities("dno_loss", "label", label)
    snapshot_margin = (snapshot_chosen_logps - snapshot_rejected_logps).detach()  # (B,)
    h = policy_chosen_logps - policy_rejected_logps - snapshot_margin  # (B,) with gradient
    label = label.detach().to(h.dtype)
    loss = -(label * F.logsigmoid(beta * h) + (1.0 - label) * F.logsigmoid(-beta * h))  # (B,)
    return LossOutput(loss=loss, metrics={"h": h.detach(), "label": label})


__all__ = ["dno_loss", "inpo_loss", "mirror_pair_loss", "sppo_loss"]
