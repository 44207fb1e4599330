"""DPO, IPO, cDPO against hand-worked numbers and the PsiPO closed forms (THEORY.md Sec. 5)."""

import math

import pytest
import torch

from nlhf.losses.pairwise import cdpo_loss, dpo_loss, ipo_loss, log_ratio_margin


def _pair(requires_grad=False):
    """policy chosen -1, rejected -3; ref chosen -1.5, rejected -2.5:
    h = (-1 + 3) - (-1.5 + 2.5) = 2 - 1 = 1."""
    pc = torch.tensor([-1.0], dtype=torch.float64, requires_grad=requires_grad)
    pr = torch.tensor([-3.0], dtype=torch.float64, requires_grad=requires_grad)
    rc = torch.tensor([-1.5], dtype=torch.float64)
    rr = torch.tensor([-2.5], dtype=torch.float64)
    return pc, pr, rc, rr


def _close(a, b, tol=1e-9):
    a = a.detach() if isinstance(a, torch.Tensor) else a
    assert abs(float(a) - b) < tol, (float(a), b)


def test_log_ratio_margin_hand_value():
    _close(log_ratio_margin(*_pair())[0], 1.0)


def test_dpo_hand_values_and_gradient():
    """tau = 0.5, h = 1: loss = -log sigmoid(0.5) = log(1 + e^-0.5) = 0.474077.
    d loss / d h = -tau sigmoid(-tau h) = -0.5 * 0.377541 = -0.188770; d h / d pc = 1, d h / d pr = -1.
    Metrics: reward margin tau h = 0.5; chosen reward 0.5 * (-1 + 1.5) = 0.25; rejected 0.5 * (-3 + 2.5) = -0.25."""
    pc, pr, rc, rr = _pair(requires_grad=True)
    out = dpo_loss(pc, pr, rc, rr, tau=0.5)
    assert out.loss.shape == (1,)
    _close(out.loss[0], 0.47407698418)
    out.loss.sum().backward()
    _close(pc.grad[0], -0.18877033440)
    _close(pr.grad[0], 0.18877033440)
    _close(out.metrics["reward_margin"][0], 0.5)
    _close(out.metrics["log_ratio_margin"][0], 1.0)
    _close(out.metrics["chosen_reward"][0], 0.25)
    _close(out.metrics["rejected_reward"][0], -0.25)
    _close(out.metrics["accuracy"][0], 1.0)


def test_cdpo_hand_values_and_gradient():
    """eps = 0.1, tau = 0.5, h = 1: 0.9 * 0.474077 + 0.1 * (-log sigmoid(-0.5) = 0.974077) = 0.524077.
    d/dh = -0.9 * 0.5 * sigmoid(-0.5) + 0.1 * 0.5 * sigmoid(0.5) = -0.169893 + 0.031123 = -0.138770.
    eps = 0 is DPO."""
    pc, pr, rc, rr = _pair(requires_grad=True)
    out = cdpo_loss(pc, pr, rc, rr, tau=0.5, label_smoothing=0.1)
    _close(out.loss[0], 0.52407698418)
    out.loss.sum().backward()
    _close(pc.grad[0], -0.13877033440)
    _close(cdpo_loss(*_pair(), tau=0.5, label_smoothing=0.0).loss[0], 0.47407698418)


def test_cdpo_is_mitchells_formula_by_hand():
    """Mitchell's cDPO note, Eq. 3: -(1 - eps) log sigmoid(tau h) - eps log sigmoid(-tau h). With
    tau h = log 3 (sigmoid = 3/4) and eps = 0.1: -0.9 log 0.75 - 0.1 log 0.25
    = 0.9 * 0.2876821 + 0.1 * 1.3862944 = 0.3975433; plain DPO (what TRL 1.16's sigmoid loss gives
    whatever label_smoothing is) would be -log 0.75 = 0.2876821."""
    h = torch.tensor([2 * math.log(3.0)], dtype=torch.float64)  # tau = 0.5: tau h = log 3
    zero = torch.zeros(1, dtype=torch.float64)
    _close(cdpo_loss(h, zero, zero, zero, tau=0.5, label_smoothing=0.1).loss[0], 0.3975433013, tol=1e-9)
    _close(dpo_loss(h, zero, zero, zero, tau=0.5).loss[0], 0.2876820725, tol=1e-9)


def test_cdpo_optimum_is_finite():
    """The cDPO minimiser over h is tau h = log((1 - eps)/eps): for eps 0.1, tau 0.5, h = 2 ln 9 = 4.394449,
    where the gradient vanishes; DPO's there is -tau sigmoid(-ln 9) = -0.05 (it never vanishes)."""
    h = torch.tensor([2 * math.log(9.0)], dtype=torch.float64, requires_grad=True)
    zero = torch.zeros(1, dtype=torch.float64)
    cdpo_loss(h, zero, zero, zero, tau=0.5, label_smoothing=0.1).loss.sum().backward()
    assert abs(float(h.grad[0])) < 1e-12
    h.grad = None
    dpo_loss(h, zero, zero, zero, tau=0.5).loss.sum().backward()
    _close(h.grad[0], -0.05)  # -tau sigmoid(-tau h) = -0.5 sigmoid(-ln 9) = -0.5 * 0.1


def test_ipo_hand_values_hard_and_soft_labels():
    """tau = 0.25, h = 1. Hard label (Eq. 17): (1 - 1/(2 * 0.25))^2 = (1 - 2)^2 = 1.
    Soft labels: p = 0.75 -> target (0.25)/0.25 = 1 -> 0; p = 0.5 -> target 0 -> 1; p = 0 -> target -2 -> 9.
    Gradient (hard label): 2 (h - 2) = -2 for pc, +2 for pr."""
    pc, pr, rc, rr = _pair(requires_grad=True)
    out = ipo_loss(pc, pr, rc, rr, tau=0.25)
    _close(out.loss[0], 1.0)
    out.loss.sum().backward()
    _close(pc.grad[0], -2.0)
    _close(pr.grad[0], 2.0)
    many = [t.detach().expand(4) for t in _pair()]
    labels = torch.tensor([1.0, 0.75, 0.5, 0.0], dtype=torch.float64)
    soft = ipo_loss(*many, tau=0.25, labels=labels)
    torch.testing.assert_close(soft.loss, torch.tensor([1.0, 0.0, 1.0, 9.0], dtype=torch.float64))
    # accuracy against the label's side: h = 1 > 0 agrees with p > 1/2, undecided at p = 1/2, wrong at p = 0
    assert soft.metrics["accuracy"].tolist() == [1.0, 1.0, 0.5, 0.0]


def test_ipo_hard_label_one_is_one_over_two_tau():
    """labels = 1 gives exactly the default (Eq. 17 target 1/(2 tau))."""
    args = [
        torch.tensor([0.3, -2.0]),
        torch.tensor([-1.0, 0.5]),
        torch.tensor([0.0, 0.1]),
        torch.tensor([0.2, 0.0]),
    ]
    torch.testing.assert_close(
        ipo_loss(*args, tau=0.1).loss, ipo_loss(*args, tau=0.1, labels=torch.ones(2)).loss
    )


def test_ipo_soft_label_folds_both_orderings():
    """p (h - 1/(2tau))^2 + (1 - p)(-h - 1/(2tau))^2 = (h - (p - 1/2)/tau)^2 + p(1 - p)/tau^2.
    E.g. h = 1, tau = 0.25, p = 0.75: 0.75 * 1 + 0.25 * 9 = 3 = 0 + 0.1875 / 0.0625."""
    h = torch.tensor([1.0, -0.4, 2.5, 0.0], dtype=torch.float64)
    p = torch.tensor([0.75, 0.3, 1.0, 0.5], dtype=torch.float64)
    tau = 0.25
    zero = torch.zeros(4, dtype=torch.float64)
    fold = p * ipo_loss(h, zero, zero, zero, tau).loss + (1 - p) * ipo_loss(-h, zero, zero, zero, tau).loss
    soft = ipo_loss(h, zero, zero, zero, tau, labels=p).loss
    torch.testing.assert_close(fold, soft + p * (1 - p) / tau**2)
    _close(fold[0], 3.0)


def test_ipo_two_actions_optimum():
    """THEORY.md Sec. 5: y1 always preferred, reference mu: pi(y1)/pi(y2) = (mu1/mu2) exp(1/(2 tau)).
    Uniform mu, tau = 0.5: pi(y1) = sigmoid(1) = 0.731059; mu = (0.8, 0.2), tau = 0.5: ratio 4e = 10.873127,
    pi(y1) = 4e/(1 + 4e) = 0.915776. The IPO loss is minimised exactly there (gradient zero)."""
    for mu1, expected in [(0.5, 0.7310585786), (0.8, 4 * math.e / (1 + 4 * math.e))]:
        mu = torch.log(torch.tensor([mu1, 1 - mu1], dtype=torch.float64))
        pi1 = torch.tensor(expected, dtype=torch.float64)
        theta = torch.log(torch.stack([pi1, 1 - pi1])).requires_grad_(True)
        logpi = torch.log_softmax(theta, -1)
        loss = ipo_loss(logpi[:1], logpi[1:], mu[:1], mu[1:], tau=0.5).loss.sum()
        loss.backward()
        assert theta.grad.abs().max() < 1e-5, (mu1, theta.grad)


def test_ipo_d1_closed_form():
    """PsiPO Sec. 5.4, D1 = {a > b, b > c, a > c}, uniform reference, single-token responses, SUM
    log-probs: least squares of three targets 1/(2 tau) gives theta_a - theta_b = theta_b - theta_c = 1/(3 tau)
    (for tau = 0.5: 2/3). Minimised with L-BFGS through ipo_loss on log_softmax(theta)."""
    winners, losers = torch.tensor([0, 1, 0]), torch.tensor([1, 2, 2])
    ref = torch.full((3,), math.log(1 / 3), dtype=torch.float64)
    for tau in (0.1, 0.5, 1.0):
        theta = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS(
            [theta],
            lr=1.0,
            max_iter=200,
            tolerance_grad=1e-12,
            tolerance_change=1e-15,
            line_search_fn="strong_wolfe",
        )

        def closure(theta=theta, opt=opt, tau=tau):
            opt.zero_grad()
            logpi = torch.log_softmax(theta, -1)
            loss = ipo_loss(logpi[winners], logpi[losers], ref, ref, tau=tau).loss.mean()
            loss.backward()
            return loss

        opt.step(closure)
        t = theta.detach()
        assert abs(float(t[0] - t[1]) - 1 / (3 * tau)) < 1e-6
        assert abs(float(t[1] - t[2]) - 1 / (3 * tau)) < 1e-6


def test_ipo_mean_reduction_rescales_tau():
    """Equal lengths L = 4: h_mean = h_sum / 4, and mean-IPO at tau = (1/L^2) sum-IPO at tau / L.
    h_sum = 3, tau = 1: (0.75 - 0.5)^2 = 0.0625 = (3 - 2)^2 / 16."""
    z = torch.zeros(1, dtype=torch.float64)
    mean = ipo_loss(torch.tensor([3.0 / 4], dtype=torch.float64), z, z, z, tau=1.0).loss
    summed = ipo_loss(torch.tensor([3.0], dtype=torch.float64), z, z, z, tau=0.25).loss
    _close(mean[0], 0.0625)
    _close(summed[0] / 16, 0.0625)


def test_losses_are_per_example_and_accuracy_hand_values():
    """Three pairs with h = (1, -1, 0): DPO accuracy (1, 0, 1/2); the loss is per pair (3,), not a mean."""
    h = torch.tensor([1.0, -1.0, 0.0])
    z = torch.zeros(3)
    out = dpo_loss(h, z, z, z, tau=1.0)
    assert out.loss.shape == (3,)
    assert out.metrics["accuracy"].tolist() == [1.0, 0.0, 0.5]
    _close(out.loss[2], math.log(2), 1e-6)


def test_pairwise_errors():
    pc, pr, rc, rr = _pair()
    with pytest.raises(ValueError, match="tau must be"):
        dpo_loss(pc, pr, rc, rr, tau=0.0)
    with pytest.raises(ValueError, match="tau must be"):
        ipo_loss(pc, pr, rc, rr, tau=-1.0)
    with pytest.raises(ValueError, match="one shape"):
        dpo_loss(pc, pr.expand(2), rc, rr, tau=1.0)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\]; row 1 is 1.5"):
        ipo_loss(
            *[t.expand(2) for t in _pair()], tau=1.0, labels=torch.tensor([0.5, 1.5], dtype=torch.float64)
        )
    with pytest.raises(ValueError, match="label_smoothing"):
        cdpo_loss(pc, pr, rc, rr, tau=1.0, label_smoothing=0.5)
