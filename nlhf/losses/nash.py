"""Online losses of NLHF: Nash-MD-PG (and its family) and online IPO / IPO-MD (THEORY.md Sec. 4, 6).

Both take log-probs of responses sampled during training; the samples are token ids, so no
gradient can flow through the sampling itself ("stop-gradient samples"): the trainer
recomputes the log-probs with gradient by a forward pass on the sampled ids.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nlhf.losses.base import (
    LossOutput,
    as_mask,
    check_probabilities,
    check_same_shape,
    check_tau,
    zero_outside,
)
from nlhf.losses.kl import kl_k1, kl_k3
from nlhf.losses.pairwise import ipo_loss


def reward_to_go(values: Tensor, mask: Tensor) -> Tensor:
    """R[b, n] = sum_{n' >= n} mask[b, n'] values[b, n'] on masked positions, 0 elsewhere. (B, T) -> (B, T)."""
    check_same_shape("reward_to_go", 2, values=values, mask=mask)
    masked = zero_outside(values, mask)  # (B, T)
    return zero_outside(
        torch.flip(torch.cumsum(torch.flip(masked, dims=[-1]), dim=-1), dims=[-1]), mask
    )  # (B, T)


def nash_md_pg_loss(
    policy_logps: Tensor,
    ref_logps: Tensor,
    mask: Tensor,
    preference: Tensor,
    tau: float,
    sampling_logps: Tensor | None = None,
    same_token_kl: bool = False,
    max_importance_weight: float | None = None,
    baseline: Tensor | None = None,
) -> LossOutput:
    """Nash-MD-PG surrogate loss for y ~ pi_theta against an opponent y' (THEORY.md Sec. 4; NLHF Sec. 7).

    The gradient estimate of THEORY.md Sec. 4 (NLHF Eq. 13, regularised policy gradient),
        g = grad log pi(y|x) [P(y > y'|x) - 1/2 - tau log(pi(y|x)/mu(y|x))],
    is taken per token with reward-to-go for the KL part; this function returns a per-example
    surrogate whose *negative gradient* is that estimate:
        loss_b = -w_b [ (P_b - 1/2) sum_n log pi(y_n | .) - tau sum_n log pi(y_n | .) * sg(R_n) ],
        R_n = sum_{n' >= n} d_n',   d_n = log pi(y_n | x, y_<n) - log mu(y_n | x, y_<n),
    where sg is stop-gradient: the bracket (P - 1/2 and every R_n) is a constant, and
    differentiating through the log-ratio in it would bias the estimate. The baseline 1/2 is
    P(y > y), which needs no value network; P comes from the judge on (y, y'), so nothing
    flows through y' (the opponent's log-probs are not inputs at all). The loss *value* is
    a surrogate, not an objective; only its gradient has meaning.

    Why reward-to-go is unbiased: E_pi[grad log pi(y) log(pi(y)/mu(y))] = grad KL(pi || mu)
    (as E_pi[grad log pi] = 0), and grad log pi(y) = sum_n grad log pi(y_n|.), log(pi/mu) =
    sum_n' d_n'. For n' < n, E[grad log pi(y_n|.) d_n'] = E[d_n' E[grad log pi(y_n|.) | y_<n]]
    = 0, so dropping those terms changes nothing in expectation and removes their variance.
    ``same_token_kl=True`` keeps only n' = n (R_n := d_n), TRL 1.13's estimator: it also
    drops the n' > n terms, which do not vanish, so it is biased for the sequence KL. It is
    here only as a negative control for tests; never use it to train.

    Sampling distribution (``sampling_logps``). The estimator is unbiased only for y ~ pi_theta
    (temperature 1, no top-k/top-p). If y was drawn from another distribution q (e.g.
    temperature != 1), pass q's per-token log-probs of the same tokens, log q(y_n | x, y_<n)
    (the sampler's, or :func:`nlhf.logprobs.token_logps` at the sampling temperature), and
    each sequence's surrogate is weighted by the sequence-level importance ratio
        w_b = pi(y|x) / q(y|x) = exp(sum_n mask * (log pi(y_n|.) - log q(y_n|.))), detached.
    Unbiasedness: E_{y~q}[w(y) f(y)] = sum_y q(y) pi(y)/q(y) f(y) = E_{y~pi}[f(y)] for the
    whole per-sequence term f (score times the bracket, whose reward-to-go reaches to the
    sequence end, so only the whole-sequence ratio is correct; PPO-style per-token ratios are
    not), provided q(y) > 0 wherever pi(y) > 0. A temperature keeps every token possible, so
    the weighted estimate is exactly unbiased; top-k/top-p give q = 0 to sequences pi can
    produce, and no weighting recovers their contribution (the estimate is then unbiased
    only for the gradient restricted to q's support: prefer temperature-only sampling, or
    train the truncated policy itself by passing its differentiable log-probs as
    ``policy_logps`` with ``sampling_logps=None``). The ratio's variance grows with length
    and with the distance between pi and q; ``max_importance_weight`` clips w (this
    reintroduces bias; None, the default, does not clip). Without ``sampling_logps`` y is
    assumed to come from pi_theta.

    Opponent: for Nash-MD-PG y' comes from the token-level geometric mixture
    softmax((1 - mixture_coef) logits_pi + mixture_coef logits_mu); SelfPlay (mixture_coef 0),
    BestResponse (mixture_coef 1) and Nash-EMA-PG (y' from the EMA policy) use this same loss.

    Args:
        policy_logps: (B, T) log pi_theta(y_n | x, y_<n) at temperature 1, with gradient
            (T = the positions of :func:`nlhf.logprobs.token_logps`).
        ref_logps: (B, T) log mu(y_n | x, y_<n) of the frozen reference.
        mask: (B, T) completion mask (``completion_mask[:, 1:]``).
        preference: (B,) P(y > y' | x) in [0, 1] from the judge.
        tau: KL regularisation strength (> 0).
        sampling_logps: (B, T) log q(y_n | .) under the distribution that actually sampled y, or None.
        same_token_kl: negative control (see above).
        max_importance_weight: clip for w, or None.
        baseline: (B,) a constant subtracted from P instead of 1/2, or None (1/2). It must not
            depend on y (e.g. :func:`leave_one_out_baseline` over the other responses of the
            same prompt, as in :func:`group_preferences`); then E[grad log pi(y) b] = 0 and
            the estimate stays unbiased.

    Returns:
        LossOutput with loss (B,) and metrics (B,): ``preference``; ``advantage``
        = P - 1/2 - tau k1 (the sequence-level bracket); ``kl_k1`` and ``kl_k3`` (the k1 and
        k3 estimators of KL(pi || mu) of :mod:`nlhf.losses.kl`, multiplied by w when
        ``sampling_logps`` is given so that their batch mean stays unbiased);
        ``importance_weight`` w (1 without ``sampling_logps``); ``length`` (tokens).

    Hand example (tests/losses/test_nash_losses.py): one sequence of two tokens, log pi = (-0.5, -1.0),
    log mu = (-0.7, -0.4), P = 0.8, tau = 0.5: d = (0.2, -0.6), R = (-0.4, -0.6),
    d loss / d log pi = -[(0.8 - 0.5) - 0.5 R] = (-0.5, -0.6); same-token: (-0.2, -0.6).
    """
    tau = check_tau(tau, "nash_md_pg_loss")
    check_same_shape("nash_md_pg_loss", 2, policy_logps=policy_logps, ref_logps=ref_logps, mask=mask)
    B = policy_logps.shape[0]
    if tuple(preference.shape) != (B,):
        raise ValueError(f"nash_md_pg_loss: preference must be (B,) = ({B},), got {tuple(preference.shape)}")
    check_probabilities("nash_md_pg_loss", "preference", preference)
    m = as_mask(mask, policy_logps)  # (B, T)
    logp = zero_outside(policy_logps, mask)  # (B, T) with gradient
    d = zero_outside(policy_logps.detach() - ref_logps.detach(), mask)  # (B, T) token log-ratios, constants
    kl_to_go = d if same_token_kl else reward_to_go(d, m)  # (B, T) constants
    if baseline is None:
        centred = preference.detach().to(logp.dtype) - 0.5  # (B,) baseline P(y > y) = 1/2
    else:
        if tuple(baseline.shape) != (B,):
            raise ValueError(f"nash_md_pg_loss: baseline must be (B,) = ({B},), got {tuple(baseline.shape)}")
        centred = (preference.detach() - baseline.detach()).to(logp.dtype)  # (B,)
    surrogate = centred * logp.sum(dim=-1) - tau * (logp * kl_to_go).sum(dim=-1)  # (B,)

    if sampling_logps is None:
        weight = torch.ones_like(centred)  # (B,)
    else:
        check_same_shape("nash_md_pg_loss", 2, policy_logps=policy_logps, sampling_logps=sampling_logps)
        log_w = zero_outside(policy_logps.detach() - sampling_logps.detach(), mask).sum(
            dim=-1
        )  # (B,) log pi/q
        weight = torch.exp(log_w)  # (B,)
        if max_importance_weight is not None:
            if not max_importance_weight > 0:
                raise ValueError(
                    f"nash_md_pg_loss: max_importance_weight must be > 0, got {max_importance_weight}"
                )
            weight = weight.clamp(max=max_importance_weight)
    loss = -weight * surrogate  # (B,)

    k1 = kl_k1(policy_logps, ref_logps, mask)  # (B,)
    metrics = {
        "preference": preference.detach().to(logp.dtype),
        "advantage": centred - tau * k1,
        "kl_k1": weight * k1,
        "kl_k3": weight * kl_k3(policy_logps, ref_logps, mask),
        "importance_weight": weight,
        "length": m.sum(dim=-1),
    }
    return LossOutput(loss=loss, metrics=metrics)


def leave_one_out_baseline(values: Tensor) -> Tensor:
    """b[g, i] = mean_{k != i} values[g, k]: the mean of the OTHER entries of each row. (G, K) -> (G, K), K >= 2.

    Hand example: rows (0.2, 0.4, 0.9) give (0.65, 0.55, 0.3).
    """
    if values.dim() != 2 or values.shape[1] < 2:
        raise ValueError(
            f"leave_one_out_baseline: needs (G, K) values with K >= 2, got {tuple(values.shape)}"
        )
    K = values.shape[1]
    return (values.sum(dim=1, keepdim=True) - values) / (K - 1)  # (G, K)


def group_preferences(preference_matrix: Tensor) -> tuple[Tensor, Tensor]:
    """Per-response win rates and baselines of the multi-response Nash-MD-PG estimator (THEORY.md Sec. 4).

    ``preference_matrix[g, i, j] = P(y_i > y'_j | x_g)`` for K responses y_1..y_K ~ pi and M
    opponents y'_1..y'_M ~ the mixture, all drawn independently for prompt g. Returns
    ``(p_bar, baseline)``, both (G, K):

        p_bar[g, i] = (1/M) sum_j P(y_i > y'_j)      (unbiased for P(y_i > pi^beta_mu), given y_i)
        baseline[g, i] = (1/(K-1)) sum_{k != i} p_bar[g, k]   (1/2 when K = 1)

    Unbiasedness of grad log pi(y_i) (p_bar_i - baseline_i): given y_i, p_bar_i averages
    independent opponents, so E[p_bar_i | y_i] = P(y_i > pi^beta_mu); the baseline is a
    function of the other responses and of the opponents only, which are independent of
    y_i, so E[grad log pi(y_i) baseline_i] = E[baseline_i] E[grad log pi(y_i)] = 0. Using
    every (i, j) pair costs K M judge calls for 2 K samples (checked by enumeration in
    tests/losses/test_nash_losses.py). Hand example: K = M = 2, P = ((0.9, 0.7), (0.2, 0.4))
    gives p_bar = (0.8, 0.3), baseline = (0.3, 0.8).
    """
    if preference_matrix.dim() != 3:
        raise ValueError(
            f"group_preferences: needs (G, K, M) probabilities, got shape {tuple(preference_matrix.shape)}"
        )
    check_probabilities("group_preferences", "preference_matrix", preference_matrix)
    p_bar = preference_matrix.mean(dim=2)  # (G, K)
    if p_bar.shape[1] == 1:
        return p_bar, torch.full_like(p_bar, 0.5)
    return p_bar, leave_one_out_baseline(p_bar)


def online_ipo_loss(
    policy_first_logps: Tensor,
    policy_second_logps: Tensor,
    ref_first_logps: Tensor,
    ref_second_logps: Tensor,
    preference: Tensor,
    tau: float,
) -> LossOutput:
    """Online IPO: the IPO loss on two policy samples with the judge's soft label (THEORY.md Sec. 6;
    Calandriello et al. 2024, Sec. 4; PsiPO Eq. 17).

    loss_b = (h_b - (P_b - 1/2) / tau)^2 with h = log[pi(y) mu(y') / (pi(y') mu(y))] and
    P = P(y > y' | x) from the judge: exactly :func:`nlhf.losses.pairwise.ipo_loss` with
    ``labels=preference``. Both y and y' are sampled from the current policy (stop-gradient
    samples: ids, not log-probs) and *both* log-probs carry gradient; the label is a constant.
    IPO-MD is the same loss on two samples from the geometric mixture.

    Use SUM log-probs (``seq_logps(..., "sum")``): then, for y, y' independent samples of pi,
    the expected gradient is (4 / tau) times the expected Nash-MD-PG gradient at
    mixture_coef 0 (both orderings folded in), so both have the regularised Nash
    equilibrium pi*_tau as stationary point (learning rates differ by that factor). With MEAN
    log-probs that equivalence fails (tests/losses/test_nash_losses.py checks both by enumeration).

    Shapes: four (B,) sequence log-probs and preference (B,) -> loss (B,); metrics as
    :func:`~nlhf.losses.pairwise.ipo_loss` plus ``preference``. KL is not reported here (it
    needs per-token log-probs: use :func:`nlhf.losses.kl.kl_k1` on each sample).
    """
    check_probabilities("online_ipo_loss", "preference", preference)
    out = ipo_loss(
        policy_first_logps,
        policy_second_logps,
        ref_first_logps,
        ref_second_logps,
        tau,
        labels=preference.detach(),
    )
    metrics = dict(out.metrics)
    metrics["preference"] = preference.detach().to(out.loss.dtype)
    return LossOutput(loss=out.loss, metrics=metrics)
