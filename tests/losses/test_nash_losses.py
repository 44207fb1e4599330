"""Nash-MD-PG and online IPO: hand-worked gradients, exact expected gradients by enumeration on a
tabular two-token "policy", Monte-Carlo within 4 standard errors, and negative controls
(THEORY.md Sec. 4, 6)."""

import math

import pytest
import torch

from nlhf.logprobs import seq_logps
from nlhf.losses.nash import (
    group_preferences,
    leave_one_out_baseline,
    nash_md_pg_loss,
    online_ipo_loss,
    reward_to_go,
)

D = torch.float64


# --------------------------------------------------------------------------------------------
# Hand-worked numbers
# --------------------------------------------------------------------------------------------


def _hand():
    """One sequence of two tokens: log pi = (-0.5, -1.0), log mu = (-0.7, -0.4), P = 0.8, tau = 0.5."""
    logpi = torch.tensor([[-0.5, -1.0]], dtype=D, requires_grad=True)
    logmu = torch.tensor([[-0.7, -0.4]], dtype=D)
    mask = torch.ones(1, 2, dtype=torch.bool)
    return logpi, logmu, mask, torch.tensor([0.8], dtype=D), 0.5


def test_reward_to_go_hand_values():
    """values (1, 2, 3 | 4, 5, pad): reward-to-go (6, 5, 3 | 9, 5, 0)."""
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 100.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    assert reward_to_go(values, mask).tolist() == [[6.0, 5.0, 3.0], [9.0, 5.0, 0.0]]


def test_nash_md_pg_hand_gradient():
    """d = log pi - log mu = (0.2, -0.6); reward-to-go R = (-0.4, -0.6); P - 1/2 = 0.3.
    d loss / d log pi_n = -[(P - 1/2) - tau R_n] = -(0.3 + 0.2, 0.3 + 0.3) = (-0.5, -0.6).
    Same-token KL (R_n := d_n): -(0.3 - 0.1, 0.3 + 0.3) = (-0.2, -0.6).
    Metrics: k1 = -0.4; advantage = 0.3 - 0.5 * (-0.4) = 0.5;
    k3 = (e^-0.2 - 1 + 0.2) + (e^0.6 - 1 - 0.6) = 0.018731 + 0.222119 = 0.240850."""
    logpi, logmu, mask, pref, tau = _hand()
    out = nash_md_pg_loss(logpi, logmu, mask, pref, tau)
    assert out.loss.shape == (1,)
    out.loss.sum().backward()
    torch.testing.assert_close(logpi.grad, torch.tensor([[-0.5, -0.6]], dtype=D))
    assert abs(float(out.metrics["kl_k1"][0]) + 0.4) < 1e-12
    assert abs(float(out.metrics["advantage"][0]) - 0.5) < 1e-12
    assert abs(float(out.metrics["kl_k3"][0]) - 0.2408503) < 1e-6
    assert float(out.metrics["importance_weight"][0]) == 1.0
    assert float(out.metrics["length"][0]) == 2.0

    logpi.grad = None
    nash_md_pg_loss(logpi, logmu, mask, pref, tau, same_token_kl=True).loss.sum().backward()
    torch.testing.assert_close(logpi.grad, torch.tensor([[-0.2, -0.6]], dtype=D))


def test_nash_md_pg_hand_gradient_importance_weighted():
    """Sampled at another temperature with log q = (-0.7, -1.2): log w = (−0.5 + 0.7) + (−1.0 + 1.2) = 0.4,
    w = e^0.4 = 1.491825; the gradient is w (-0.5, -0.6) = (-0.745912, -0.895095); k1 metric w * -0.4."""
    logpi, logmu, mask, pref, tau = _hand()
    q = torch.tensor([[-0.7, -1.2]], dtype=D)
    out = nash_md_pg_loss(logpi, logmu, mask, pref, tau, sampling_logps=q)
    out.loss.sum().backward()
    w = math.exp(0.4)
    torch.testing.assert_close(logpi.grad, torch.tensor([[-0.5 * w, -0.6 * w]], dtype=D))
    assert abs(float(out.metrics["importance_weight"][0]) - w) < 1e-12
    assert abs(float(out.metrics["kl_k1"][0]) + 0.4 * w) < 1e-12
    clipped = nash_md_pg_loss(logpi, logmu, mask, pref, tau, sampling_logps=q, max_importance_weight=1.2)
    assert abs(float(clipped.metrics["importance_weight"][0]) - 1.2) < 1e-12


def test_nash_md_pg_masks_and_detaches():
    """Padding contributes nothing (even NaN / -inf there), the bracket is a constant
    (ref log-probs with grad get none), and the result is per example. Row 1 has one token:
    d = 0.3 (log pi -1.0, log mu -1.3), P = 0.5, tau = 1: d loss/d log pi = -(0 - 0.3) = 0.3."""
    logpi = torch.tensor([[-0.5, -1.0], [-1.0, float("nan")]], dtype=D, requires_grad=True)
    logmu = torch.tensor([[-0.7, -0.4], [-1.3, -float("inf")]], dtype=D, requires_grad=True)
    mask = torch.tensor([[1, 1], [1, 0]], dtype=torch.bool)
    pref = torch.tensor([0.8, 0.5], dtype=D, requires_grad=True)
    out = nash_md_pg_loss(logpi, logmu, mask, pref, tau=1.0)
    assert out.loss.shape == (2,)
    assert torch.isfinite(out.loss).all() and torch.isfinite(out.metrics["kl_k3"]).all()
    out.loss[1].backward()
    torch.testing.assert_close(logpi.grad, torch.tensor([[0.0, 0.0], [0.3, 0.0]], dtype=D))
    assert logmu.grad is None and pref.grad is None


def test_nash_md_pg_errors():
    logpi, logmu, mask, pref, tau = _hand()
    with pytest.raises(ValueError, match=r"preference must lie in \[0, 1\]; row 0 is 1.2"):
        nash_md_pg_loss(logpi, logmu, mask, torch.tensor([1.2], dtype=D), tau)
    with pytest.raises(ValueError, match=r"preference must be \(B,\)"):
        nash_md_pg_loss(logpi, logmu, mask, torch.tensor([0.5, 0.5], dtype=D), tau)
    with pytest.raises(ValueError, match="one shape"):
        nash_md_pg_loss(logpi, logmu[:, :1], mask, pref, tau)
    with pytest.raises(ValueError, match="tau must be"):
        nash_md_pg_loss(logpi, logmu, mask, pref, 0.0)


def test_online_ipo_hand_values():
    """h = (-1 + 3) - (-1.5 + 2.5) = 1, tau = 0.25: P = 0.75 -> (1 - 0.25/0.25)^2 = 0; P = 0.5 -> 1;
    d loss / d log pi(first) at P = 0.5: 2 (1 - 0) = 2; at P = 0.75: 0."""
    first = torch.tensor([-1.0, -1.0], dtype=D, requires_grad=True)
    second = torch.tensor([-3.0, -3.0], dtype=D, requires_grad=True)
    rf, rs = torch.tensor([-1.5, -1.5], dtype=D), torch.tensor([-2.5, -2.5], dtype=D)
    out = online_ipo_loss(first, second, rf, rs, torch.tensor([0.75, 0.5], dtype=D), tau=0.25)
    torch.testing.assert_close(out.loss, torch.tensor([0.0, 1.0], dtype=D))
    out.loss.sum().backward()
    torch.testing.assert_close(first.grad, torch.tensor([0.0, 2.0], dtype=D))
    torch.testing.assert_close(second.grad, torch.tensor([0.0, -2.0], dtype=D))
    assert out.metrics["preference"].tolist() == [0.75, 0.5]


# --------------------------------------------------------------------------------------------
# A tabular two-token "language model"
# --------------------------------------------------------------------------------------------
# Vocabulary {0: a, 1: b, 2: EOS}. A response is one token if it is EOS, else two tokens
# (the second may be EOS): 7 sequences with lengths 1 or 2. The policy is an explicit table of
# logits: theta[:3] for token 1, theta[3:].view(2, 3) for token 2 given token 1 in {a, b}.

SEQS = torch.tensor([[2, 0], [0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]])  # (7, 2), [2, 0] = "EOS" + pad
SEQ_MASK = torch.tensor([[1, 0]] + [[1, 1]] * 6, dtype=torch.bool)  # (7, 2)

THETA = torch.tensor([0.3, -0.2, -0.6, 1.0, -0.5, 0.2, -0.8, 0.6, 0.1], dtype=D)
REF = torch.tensor([0.0, 0.4, -0.3, -0.7, 0.9, 0.0, 0.5, -1.0, 0.3], dtype=D)
OPPONENT = torch.tensor([0.1, 0.2, 0.05, 0.15, 0.2, 0.1, 0.2], dtype=D)  # a fixed distribution over the 7


def _preference_table():
    """P(y_i > y_j) = 1/2 + A_ij, A skew-symmetric with entries in (-1/2, 1/2) (seeded)."""
    g = torch.Generator().manual_seed(3)
    a = 0.45 * (2 * torch.rand(7, 7, generator=g, dtype=D) - 1)
    a = torch.triu(a, 1)
    return 0.5 + a - a.T


PREF = _preference_table()


def token_logps_table(theta, seqs, mask, temperature=1.0):
    """Per-token log-probs (N, 2) of the tabular model; 0 at padding."""
    first = torch.log_softmax(theta[:3] / temperature, -1)[seqs[:, 0]]  # (N,)
    second_tab = torch.log_softmax(theta[3:].view(2, 3) / temperature, -1)  # (2, 3)
    second = second_tab[seqs[:, 0].clamp(max=1), seqs[:, 1]]  # (N,)
    return torch.stack([first, second], dim=-1) * mask  # (N, 2)


def seq_probs(theta, temperature=1.0):
    return torch.exp(token_logps_table(theta, SEQS, SEQ_MASK, temperature).sum(-1))  # (7,)


def exact_objective(theta, tau, opponent):
    """J(theta) = E_{y~pi} P(y > opponent) - tau KL(pi || mu), enumerated over the 7 sequences."""
    pi = seq_probs(theta)
    mu = seq_probs(REF)
    return (pi * (PREF @ opponent)).sum() - tau * (pi * (torch.log(pi) - torch.log(mu))).sum()


def expected_loss_gradient(loss_fn, theta, weights):
    """Exact E[grad loss] for a per-example loss evaluated on enumerated examples with probabilities
    ``weights`` (detached): grad of sum_i weights_i loss_i."""
    th = theta.clone().requires_grad_(True)
    (weights.detach() * loss_fn(th)).sum().backward()
    return th.grad


def _nash_on(idx_y, idx_opp, theta, tau, **kw):
    logpi = token_logps_table(theta, SEQS[idx_y], SEQ_MASK[idx_y])
    logmu = token_logps_table(REF, SEQS[idx_y], SEQ_MASK[idx_y])
    return nash_md_pg_loss(logpi, logmu, SEQ_MASK[idx_y], PREF[idx_y, idx_opp], tau, **kw).loss


PAIRS_Y = torch.arange(7).repeat_interleave(7)  # (49,) y index of each ordered pair
PAIRS_OPP = torch.arange(7).repeat(7)  # (49,) y' index


@pytest.mark.parametrize("tau", [0.3, 1.0])
def test_nash_md_pg_expected_gradient_is_exact_by_enumeration(tau):
    """E_{y~pi, y'~opponent}[grad loss] (all 49 pairs weighted by pi(y) opponent(y')) equals
    -grad J(theta) exactly, J = E_pi P(y > opponent) - tau KL(pi || mu); the same-token KL estimator does not."""
    pi = seq_probs(THETA)
    weights = pi[PAIRS_Y] * OPPONENT[PAIRS_OPP]
    th = THETA.clone().requires_grad_(True)
    exact = -torch.autograd.grad(exact_objective(th, tau, OPPONENT), th)[0]
    got = expected_loss_gradient(lambda t: _nash_on(PAIRS_Y, PAIRS_OPP, t, tau), THETA, weights)
    torch.testing.assert_close(got, exact, rtol=0, atol=1e-12)
    wrong = expected_loss_gradient(
        lambda t: _nash_on(PAIRS_Y, PAIRS_OPP, t, tau, same_token_kl=True), THETA, weights
    )
    assert (wrong - exact).abs().max() > 0.01


def _mc_gradient(theta, tau, n, seed, sample_temperature=1.0, **kw):
    """Monte-Carlo mean and standard error of the per-sample gradient of nash_md_pg_loss over n samples
    y ~ softmax(theta / sample_temperature) (token by token), y' ~ OPPONENT. Per-sample gradients are
    exact: computed once for each of the 49 distinct (y, y') pairs, then looked up."""
    g = torch.Generator().manual_seed(seed)
    q = seq_probs(theta, sample_temperature)
    y = torch.multinomial(q, n, replacement=True, generator=g)  # (n,)
    opp = torch.multinomial(OPPONENT, n, replacement=True, generator=g)  # (n,)
    if sample_temperature != 1.0:
        kw = dict(
            kw, sampling_logps=token_logps_table(theta, SEQS[PAIRS_Y], SEQ_MASK[PAIRS_Y], sample_temperature)
        )
    th = theta.clone().requires_grad_(True)
    per_pair = torch.autograd.functional.jacobian(
        lambda t: _nash_on(PAIRS_Y, PAIRS_OPP, t, tau, **kw), th, vectorize=True
    )  # (49, 9)
    grads = per_pair[y * 7 + opp]  # (n, 9)
    return grads.mean(0), grads.std(0) / math.sqrt(n)


def _max_z(mean, se, exact):
    return float(((mean - exact).abs() / se.clamp_min(1e-15)).max())


def test_nash_md_pg_monte_carlo_within_4_standard_errors_and_same_token_fails():
    """Two-token responses, tau = 1, 20,000 samples (seeded): every one of the 9 components of the
    Monte-Carlo mean gradient is within 4 standard errors of the exact gradient -grad J; with the
    same-token KL estimator (TRL 1.13) some component is more than 4 standard errors off (here > 10)."""
    tau, n = 1.0, 20000
    th = THETA.clone().requires_grad_(True)
    exact = -torch.autograd.grad(exact_objective(th, tau, OPPONENT), th)[0]
    mean, se = _mc_gradient(THETA, tau, n, seed=0)
    assert _max_z(mean, se, exact) < 4, (mean, exact, se)
    mean_st, se_st = _mc_gradient(THETA, tau, n, seed=0, same_token_kl=True)
    assert _max_z(mean_st, se_st, exact) > 10


def test_nash_md_pg_importance_weights_correct_temperature_sampling():
    """Samples drawn at temperature 0.6 (the sampler's distribution q != pi): with sampling_logps the
    weighted Monte-Carlo gradient is within 4 standard errors of the exact gradient for pi; treating
    the tempered samples as samples of pi (no sampling_logps) is off by more than 4 (here > 10) standard errors."""
    tau, n = 1.0, 20000
    th = THETA.clone().requires_grad_(True)
    exact = -torch.autograd.grad(exact_objective(th, tau, OPPONENT), th)[0]
    mean, se = _mc_gradient(THETA, tau, n, seed=1, sample_temperature=0.6)
    assert _max_z(mean, se, exact) < 4, (mean, exact, se)

    # the naive estimate: the same tempered samples, scored as if they came from pi
    g = torch.Generator().manual_seed(1)
    y = torch.multinomial(seq_probs(THETA, 0.6), n, replacement=True, generator=g)
    opp = torch.multinomial(OPPONENT, n, replacement=True, generator=g)
    per_pair = torch.autograd.functional.jacobian(
        lambda t: _nash_on(PAIRS_Y, PAIRS_OPP, t, tau), THETA.clone(), vectorize=True
    )
    naive = per_pair[y * 7 + opp]
    assert _max_z(naive.mean(0), naive.std(0) / math.sqrt(n), exact) > 10


# --------------------------------------------------------------------------------------------
# Online IPO = (4 / tau) Nash-MD-PG at mixture_coef 0, in expectation, with SUM log-probs
# --------------------------------------------------------------------------------------------


def _online_ipo_on(theta, tau, reduction):
    mask = SEQ_MASK  # (7, 2): token_logps_table is already aligned with its mask
    lp = seq_logps(token_logps_table(theta, SEQS, mask), mask, reduction)  # (7,)
    lr = seq_logps(token_logps_table(REF, SEQS, mask), mask, reduction)  # (7,)
    return online_ipo_loss(
        lp[PAIRS_Y], lp[PAIRS_OPP], lr[PAIRS_Y], lr[PAIRS_OPP], PREF[PAIRS_Y, PAIRS_OPP], tau
    ).loss


@pytest.mark.parametrize("tau", [0.2, 1.0])
def test_online_ipo_expected_gradient_is_4_over_tau_nash_md_pg(tau):
    """THEORY.md Sec. 6, by enumeration over the 49 ordered pairs y, y' ~ pi (independent): with SUM
    log-probs E[grad online-IPO] = (4 / tau) E[grad Nash-MD-PG] with the opponent = pi (mixture_coef 0),
    both equal to -(4/tau) grad J at the opponent held fixed; with MEAN log-probs (lengths 1 and 2
    here) the proportionality fails."""
    pi = seq_probs(THETA).detach()
    weights = pi[PAIRS_Y] * pi[PAIRS_OPP]
    nash = expected_loss_gradient(lambda t: _nash_on(PAIRS_Y, PAIRS_OPP, t, tau), THETA, weights)
    ipo_sum = expected_loss_gradient(lambda t: _online_ipo_on(t, tau, "sum"), THETA, weights)
    torch.testing.assert_close(ipo_sum, (4 / tau) * nash, rtol=0, atol=1e-11)
    th = THETA.clone().requires_grad_(True)
    exact = -torch.autograd.grad(exact_objective(th, tau, pi), th)[0]
    torch.testing.assert_close(nash, exact, rtol=0, atol=1e-12)
    ipo_mean = expected_loss_gradient(lambda t: _online_ipo_on(t, tau, "mean"), THETA, weights)
    # not proportional: the best scalar fit leaves a large residual
    c = float((ipo_mean @ nash) / (nash @ nash))
    assert (ipo_mean - c * nash).norm() > 0.05 * ipo_mean.norm()


# ----------------------------------------------------------------------------- several responses per prompt


def test_group_preferences_and_leave_one_out_hand_values():
    """K = M = 2, P = ((0.9, 0.7), (0.2, 0.4)): p_bar = (0.8, 0.3), baseline = (0.3, 0.8); rows (0.2, 0.4, 0.9)
    give leave-one-out means (0.65, 0.55, 0.3); K = 1 gives the baseline 1/2."""
    p_bar, base = group_preferences(torch.tensor([[[0.9, 0.7], [0.2, 0.4]]]))
    torch.testing.assert_close(p_bar, torch.tensor([[0.8, 0.3]]))
    torch.testing.assert_close(base, torch.tensor([[0.3, 0.8]]))
    torch.testing.assert_close(
        leave_one_out_baseline(torch.tensor([[0.2, 0.4, 0.9]])), torch.tensor([[0.65, 0.55, 0.3]])
    )
    p1, b1 = group_preferences(torch.tensor([[[0.9, 0.7]]]))
    torch.testing.assert_close(p1, torch.tensor([[0.8]]))
    torch.testing.assert_close(b1, torch.tensor([[0.5]]))
    with pytest.raises(ValueError, match="K >= 2"):
        leave_one_out_baseline(torch.tensor([[0.3]]))
    with pytest.raises(ValueError, match=r"\(G, K, M\)"):
        group_preferences(torch.tensor([0.3, 0.4]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        group_preferences(torch.tensor([[[1.3]]]))


def _group_loss(theta, y, p_bar, baseline, tau):
    """Per-prompt loss of the multi-response estimator: the mean over the K responses of nash_md_pg_loss."""
    flat = y.reshape(-1)  # (C K,)
    logpi = token_logps_table(theta, SEQS[flat], SEQ_MASK[flat])
    logmu = token_logps_table(REF, SEQS[flat], SEQ_MASK[flat])
    loss = nash_md_pg_loss(
        logpi, logmu, SEQ_MASK[flat], p_bar.reshape(-1), tau, baseline=baseline.reshape(-1)
    ).loss
    return loss.view(y.shape[0], -1).mean(dim=1)  # (C,)


@pytest.mark.parametrize("K, M", [(2, 2), (3, 1)])
def test_multi_response_nash_md_pg_expected_gradient_is_exact_by_enumeration(K, M):
    """K responses y ~ pi and M opponents y' ~ OPPONENT per prompt, every (i, j) pair judged, p_bar and the
    leave-one-out baseline of group_preferences: the expectation over all 7^(K + M) = 2,401 draws equals
    -grad J(theta) exactly (J as above, tau = 0.3). Negative control: a baseline that includes y_i's own
    p_bar (the plain group mean) shrinks the preference part by (K - 1)/K and is biased."""
    tau = 0.3
    draws = torch.cartesian_prod(*[torch.arange(7)] * (K + M))  # (7^(K+M), K+M)
    y, opp = draws[:, :K], draws[:, K:]  # (C, K), (C, M)
    weights = seq_probs(THETA)[y].prod(dim=1) * OPPONENT[opp].prod(dim=1)  # (C,) probability of each draw
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-12)
    pref = PREF[y[:, :, None], opp[:, None, :]]  # (C, K, M)
    p_bar, baseline = group_preferences(pref)
    th = THETA.clone().requires_grad_(True)
    exact = -torch.autograd.grad(exact_objective(th, tau, OPPONENT), th)[0]
    got = expected_loss_gradient(lambda t: _group_loss(t, y, p_bar, baseline, tau), THETA, weights)
    torch.testing.assert_close(got, exact, rtol=0, atol=1e-12)
    group_mean = p_bar.mean(dim=1, keepdim=True).expand_as(p_bar)
    wrong = expected_loss_gradient(lambda t: _group_loss(t, y, p_bar, group_mean, tau), THETA, weights)
    assert (wrong - exact).abs().max() > 1e-3  # 9 orders above the exact match's error
