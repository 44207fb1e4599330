"""The RLHF baseline: KL-regularised policy gradient and PPO's clipped surrogate (THEORY.md Sec. 5, 7).

Objective (per prompt x): max_pi E_{y~pi}[r(x, y)] - tau KL(pi || mu), optimum
pi(y) proportional to mu(y) exp(r(x, y) / tau) (THEORY.md Sec. 5, Psi = logit under BT).

Both losses here are CRITIC-FREE: there is no value network and no GAE. The advantage of a
sample is sequence-level -- its KL-penalised reward minus the mean of the other k - 1 samples
of the same prompt (the leave-one-out baseline of RLOO, Kool et al. 2019; Ahmadian et al.
2024) -- and every token of the sequence gets that same advantage.

KL estimator: the penalty inside the reward is k1 = log pi(y|x) / mu(y|x) (sum of token
log-ratios of the sampled completion, :func:`nlhf.losses.kl.kl_k1`), unbiased for
KL(pi || mu) when y ~ pi. It is a constant in the advantage, and
E_pi[grad log pi(y) (r - tau k1)] = grad (E_pi r - tau KL(pi || mu)), so the penalised
policy gradient is unbiased for the regularised objective.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nlhf.losses.base import LossOutput, as_mask, check_same_shape, check_tau, zero_outside
from nlhf.losses.kl import kl_k1, kl_k3


def leave_one_out_baseline(values: Tensor, group_size: int) -> Tensor:
    """For each sample, the mean of the other group_size - 1 samples of its prompt.

    The batch is prompt-major: rows [i k, (i + 1) k) are the k = ``group_size`` samples of
    prompt i. b_j = (sum_group - v_j) / (k - 1): independent of sample j, hence unbiased as a
    baseline. Shapes: (B,) -> (B,), B a multiple of k >= 2.
    Example: values (1, 2, 6) with k = 3 -> baselines (4, 3.5, 1.5).
    """
    if values.dim() != 1:
        raise ValueError(f"leave_one_out_baseline: values must be (B,), got {tuple(values.shape)}")
    if not (isinstance(group_size, int) and group_size >= 2):
        raise ValueError(f"leave_one_out_baseline: group_size must be an int >= 2, got {group_size!r}")
    B = values.shape[0]
    if B % group_size:
        raise ValueError(
            f"leave_one_out_baseline: batch of {B} samples is not a whole number of groups of {group_size} "
            "(rows [i*k, (i+1)*k) must be the k samples of prompt i)"
        )
    groups = values.view(B // group_size, group_size)  # (P, k)
    baseline = (groups.sum(dim=-1, keepdim=True) - groups) / (group_size - 1)  # (P, k)
    return baseline.reshape(B)  # (B,)


def rlhf_advantages(
    rewards: Tensor, policy_logps: Tensor, ref_logps: Tensor, mask: Tensor, tau: float, group_size: int
) -> Tensor:
    """A_j = (r_j - tau k1_j) - mean_{i != j in the group}(r_i - tau k1_i), detached.

    rewards (B,) from the reward model; policy_logps, ref_logps, mask (B, T) of the sampled
    completions (policy log-probs at sampling time; for PPO, the old policy's); k1 as in the
    module docstring. Returns (B,). Example (k = 2, tau = 0.5): r = (1, 0), k1 = (0.4, -0.2):
    penalised (0.8, 0.1), advantages (0.7, -0.7).
    """
    tau = check_tau(tau, "rlhf_advantages")
    check_same_shape("rlhf_advantages", 2, policy_logps=policy_logps, ref_logps=ref_logps, mask=mask)
    if tuple(rewards.shape) != (policy_logps.shape[0],):
        raise ValueError(
            f"rlhf_advantages: rewards must be (B,) = ({policy_logps.shape[0]},), got {tuple(rewards.shape)}"
        )
    penalised = rewards.detach().to(policy_logps.dtype) - tau * kl_k1(policy_logps, ref_logps, mask)  # (B,)
    return penalised - leave_one_out_baseline(penalised, group_size)  # (B,)


def rlhf_pg_loss(
    policy_logps: Tensor,
    ref_logps: Tensor,
    mask: Tensor,
    rewards: Tensor,
    tau: float,
    group_size: int,
) -> LossOutput:
    """KL-regularised REINFORCE with a leave-one-out baseline (RLOO), per sample.

    loss_j = -A_j sum_n log pi(y_n | x, y_<n), A_j from :func:`rlhf_advantages` (a constant),
    so -grad loss_j is an unbiased estimate of grad (E r - tau KL(pi || mu)) for y ~ pi
    (critic-free; see the module docstring). Shapes: policy_logps (with gradient), ref_logps,
    mask (B, T); rewards (B,) -> loss (B,). Metrics (B,): ``reward``, ``advantage``,
    ``kl_k1`` and ``kl_k3`` (:mod:`nlhf.losses.kl`), ``length``.
    """
    advantages = rlhf_advantages(rewards, policy_logps, ref_logps, mask, tau, group_size)  # (B,)
    m = as_mask(mask, policy_logps)  # (B, T)
    loss = -advantages * zero_outside(policy_logps, mask).sum(dim=-1)  # (B,)
    metrics = {
        "reward": rewards.detach().to(loss.dtype),
        "advantage": advantages,
        "kl_k1": kl_k1(policy_logps, ref_logps, mask),
        "kl_k3": kl_k3(policy_logps, ref_logps, mask),
        "length": m.sum(dim=-1),
    }
    return LossOutput(loss=loss, metrics=metrics)


def ppo_clip_loss(
    logps: Tensor, old_logps: Tensor, advantages: Tensor, mask: Tensor, clip_eps: float
) -> LossOutput:
    """PPO's clipped surrogate, per token (Schulman et al. 2017, Eq. 7), critic-free.

    rho_n = exp(log pi(y_n|.) - log pi_old(y_n|.)),
    loss_n = -min(rho_n A, clip(rho_n, 1 - clip_eps, 1 + clip_eps) A) on completion tokens, 0 elsewhere.
    The advantage A is the sequence's (from :func:`rlhf_advantages` with the old policy's
    log-probs, computed once per batch and reused over the PPO epochs) broadcast to its
    tokens, or given per token. The KL penalty lives in A (k1 at rollout time).

    Normalisation is the trainer's: summing the per-token losses of a sequence and averaging
    over sequences gives, at rho = 1 (the first PPO epoch), exactly the gradient of
    :func:`rlhf_pg_loss`; dividing by the number of tokens instead weights long sequences
    less per token (a different, length-biased objective).

    Shapes: logps (with gradient), old_logps, mask (B, T); advantages (B,) or (B, T).
    Returns loss (B, T) and metrics (B, T), zero outside the mask: ``ratio``, ``clipped``
    (1 where the clipped term is the active minimum and the gradient is 0), ``approx_kl_old``
    (per-token k3 = (rho - 1) - log rho, sampled under the old policy: an estimate of
    KL(pi_old || pi) given the prefix).

    Hand example (clip_eps 0.2): A = 2, rho = 1.5 -> -min(3, 2.4) = -2.4 (clipped, zero gradient);
    A = -1, rho = 0.5 -> -min(-0.5, -0.8) = 0.8 (clipped); A = 1, rho = 0.9 -> -0.9 (not clipped,
    d loss / d log pi = -rho A = -0.9).
    """
    check_same_shape("ppo_clip_loss", 2, logps=logps, old_logps=old_logps, mask=mask)
    if not 0 < clip_eps < 1:
        raise ValueError(f"ppo_clip_loss: clip_eps must be in (0, 1), got {clip_eps!r}")
    if advantages.dim() == 1:
        if advantages.shape[0] != logps.shape[0]:
            raise ValueError(
                f"ppo_clip_loss: advantages (B,) must have B = {logps.shape[0]}, got "
                f"{tuple(advantages.shape)}"
            )
        advantages = advantages.unsqueeze(-1).expand_as(logps)  # (B, T)
    elif advantages.shape != logps.shape:
        raise ValueError(
            f"ppo_clip_loss: advantages must be (B,) or (B, T) = {tuple(logps.shape)}, got "
            f"{tuple(advantages.shape)}"
        )
    m = as_mask(mask, logps)  # (B, T)
    A = advantages.detach().to(logps.dtype)  # (B, T)
    log_ratio = zero_outside(logps - old_logps.detach(), mask)  # (B, T), 0 outside the mask
    ratio = torch.exp(log_ratio)  # (B, T)
    unclipped = ratio * A  # (B, T)
    clipped = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * A  # (B, T)
    loss = zero_outside(-torch.minimum(unclipped, clipped), mask)  # (B, T)
    with torch.no_grad():
        is_clipped = (clipped < unclipped).to(logps.dtype) * m  # (B, T)
        lr = log_ratio.detach()
        metrics = {
            "ratio": ratio.detach() * m,
            "clipped": is_clipped,
            "approx_kl_old": (torch.exp(lr) - 1 - lr) * m,
        }
    return LossOutput(loss=loss, metrics=metrics)
