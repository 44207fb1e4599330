"""RLHF policy gradient (leave-one-out baseline, k1 KL penalty) and PPO-clip: hand-worked numbers
and the exact expected gradient by enumeration (THEORY.md Sec. 5)."""

import itertools
import math

import pytest
import torch

from nlhf.losses.rlhf import leave_one_out_baseline, ppo_clip_loss, rlhf_advantages, rlhf_pg_loss

D = torch.float64


def test_leave_one_out_baseline_hand_values():
    """Group (1, 2, 6), k = 3: baselines ((2+6)/2, (1+6)/2, (1+2)/2) = (4, 3.5, 1.5); two groups of 2:
    (1, 3 | 5, 9) -> (3, 1 | 9, 5)."""
    assert leave_one_out_baseline(torch.tensor([1.0, 2.0, 6.0]), 3).tolist() == [4.0, 3.5, 1.5]
    assert leave_one_out_baseline(torch.tensor([1.0, 3.0, 5.0, 9.0]), 2).tolist() == [3.0, 1.0, 9.0, 5.0]


def _two_samples():
    """One prompt, k = 2. Row 0: log pi (-1.0, -0.6), log mu (-1.2, -0.8): k1 = 0.4.
    Row 1 (one token): log pi -0.5, log mu -0.3: k1 = -0.2. Rewards (1, 0), tau = 0.5."""
    logpi = torch.tensor([[-1.0, -0.6], [-0.5, -9.0]], dtype=D, requires_grad=True)
    logmu = torch.tensor([[-1.2, -0.8], [-0.3, 4.0]], dtype=D)
    mask = torch.tensor([[1, 1], [1, 0]], dtype=torch.bool)
    return logpi, logmu, mask, torch.tensor([1.0, 0.0], dtype=D)


def test_rlhf_advantages_and_pg_hand_values():
    """Penalised rewards r - tau k1 = (1 - 0.2, 0 + 0.1) = (0.8, 0.1); leave-one-out advantages
    (0.8 - 0.1, 0.1 - 0.8) = (0.7, -0.7). loss_j = -A_j sum_n log pi: (-0.7 * -1.6, 0.7 * -0.5) = (1.12, -0.35);
    d loss / d log pi = -A_j on completion tokens: ((-0.7, -0.7), (0.7, 0))."""
    logpi, logmu, mask, rewards = _two_samples()
    adv = rlhf_advantages(rewards, logpi, logmu, mask, tau=0.5, group_size=2)
    torch.testing.assert_close(adv, torch.tensor([0.7, -0.7], dtype=D))
    assert not adv.requires_grad
    out = rlhf_pg_loss(logpi, logmu, mask, rewards, tau=0.5, group_size=2)
    torch.testing.assert_close(out.loss, torch.tensor([1.12, -0.35], dtype=D))
    out.loss.sum().backward()
    torch.testing.assert_close(logpi.grad, torch.tensor([[-0.7, -0.7], [0.7, 0.0]], dtype=D))
    torch.testing.assert_close(out.metrics["kl_k1"], torch.tensor([0.4, -0.2], dtype=D))
    # k3 row 1: exp(0.2) - 1 - 0.2 = 0.021403; row 0: 2 * (exp(-0.2) - 1 + 0.2) = 0.037462
    torch.testing.assert_close(
        out.metrics["kl_k3"], torch.tensor([2 * (math.exp(-0.2) - 0.8), math.exp(0.2) - 1.2], dtype=D)
    )


# The tabular single-token case: 4 responses, policy softmax(theta), reference mu, reward r.
THETA = torch.tensor([0.5, -0.3, 0.1, -0.8], dtype=D)
REF = torch.tensor([0.2, 0.2, -0.5, 0.4], dtype=D)
REWARD = torch.tensor([1.0, 0.2, -0.4, 0.7], dtype=D)


@pytest.mark.parametrize("group_size", [2, 3])
def test_rlhf_pg_expected_gradient_is_exact_by_enumeration(group_size):
    """Enumerating all 4^k ordered groups of k samples from pi (weights prod pi(y_i)), the expected
    gradient of rlhf_pg_loss equals -grad [E_pi r - tau KL(pi || mu)] exactly (tau = 0.3): the
    leave-one-out baseline and the k1 penalty in the reward are unbiased."""
    tau = 0.3
    groups = torch.tensor(list(itertools.product(range(4), repeat=group_size)))  # (4^k, k)
    ys = groups.flatten()  # (4^k k,) prompt-major
    th = THETA.clone().requires_grad_(True)
    logpi_table = torch.log_softmax(th, -1)
    logmu_table = torch.log_softmax(REF, -1)
    pi = logpi_table.exp().detach()
    weights = pi[groups].prod(-1).repeat_interleave(group_size)  # (4^k k,)
    mask = torch.ones(ys.shape[0], 1, dtype=torch.bool)
    out = rlhf_pg_loss(
        logpi_table[ys].unsqueeze(-1), logmu_table[ys].unsqueeze(-1), mask, REWARD[ys], tau, group_size
    )
    # the expectation of the sum over the k samples of a group is k times the per-sample expectation
    got = torch.autograd.grad((weights * out.loss).sum() / group_size, th)[0]

    th2 = THETA.clone().requires_grad_(True)
    p = torch.softmax(th2, -1)
    objective = (p * REWARD).sum() - tau * (p * (torch.log(p) - torch.log_softmax(REF, -1))).sum()
    exact = -torch.autograd.grad(objective, th2)[0]
    torch.testing.assert_close(got, exact, rtol=0, atol=1e-12)


def test_ppo_clip_hand_values():
    """clip_eps 0.2, per token (A, rho):
    (2, 1.5): -min(3, 2.4) = -2.4, clipped, zero gradient;
    (-1, 0.5): -min(-0.5, -0.8) = 0.8, clipped, zero gradient;
    (1, 0.9): -0.9, inside the range, d loss / d log pi = -rho A = -0.9;
    (-1, 1.5): -min(-1.5, -1.2) = 1.5, the unclipped (pessimistic) term is active, gradient -rho A = 1.5;
    a padding token: 0. approx_kl_old = rho - 1 - ln rho: 0.094535, 0.193147, 0.005361, 0.094535."""
    rho = torch.tensor([[1.5, 0.5, 0.9, 1.5, 3.0]], dtype=D)
    old = torch.full((1, 5), -1.0, dtype=D)
    logps = (old + torch.log(rho)).requires_grad_(True)
    adv = torch.tensor([[2.0, -1.0, 1.0, -1.0, 5.0]], dtype=D)
    mask = torch.tensor([[1, 1, 1, 1, 0]], dtype=torch.bool)
    out = ppo_clip_loss(logps, old, adv, mask, clip_eps=0.2)
    assert out.loss.shape == (1, 5)
    torch.testing.assert_close(out.loss, torch.tensor([[-2.4, 0.8, -0.9, 1.5, 0.0]], dtype=D))
    out.loss.sum().backward()
    torch.testing.assert_close(logps.grad, torch.tensor([[0.0, 0.0, -0.9, 1.5, 0.0]], dtype=D))
    assert out.metrics["clipped"].tolist() == [[1.0, 1.0, 0.0, 0.0, 0.0]]
    kl = [0.5 - math.log(1.5), -0.5 - math.log(0.5), -0.1 - math.log(0.9), 0.5 - math.log(1.5), 0.0]
    torch.testing.assert_close(out.metrics["approx_kl_old"], torch.tensor([kl], dtype=D))


def test_ppo_at_ratio_one_matches_rlhf_pg():
    """In the first PPO epoch (logps == old_logps), the per-token losses summed per sequence have the
    gradient of rlhf_pg_loss with the same advantages (both -A_j on each completion token)."""
    logpi, logmu, mask, rewards = _two_samples()
    adv = rlhf_advantages(rewards, logpi, logmu, mask, tau=0.5, group_size=2)
    ppo = ppo_clip_loss(logpi, logpi.detach(), adv, mask, clip_eps=0.2)
    ppo.loss.sum().backward()
    ppo_grad = logpi.grad.clone()
    logpi.grad = None
    rlhf_pg_loss(logpi, logmu, mask, rewards, tau=0.5, group_size=2).loss.sum().backward()
    torch.testing.assert_close(ppo_grad, logpi.grad)
    torch.testing.assert_close(ppo_grad, torch.tensor([[-0.7, -0.7], [0.7, 0.0]], dtype=D))


def test_rlhf_errors():
    with pytest.raises(ValueError, match="not a whole number of groups of 3"):
        leave_one_out_baseline(torch.zeros(4), 3)
    with pytest.raises(ValueError, match="group_size must be an int >= 2"):
        leave_one_out_baseline(torch.zeros(4), 1)
    logpi, logmu, mask, rewards = _two_samples()
    with pytest.raises(ValueError, match=r"rewards must be \(B,\)"):
        rlhf_pg_loss(logpi, logmu, mask, rewards[:1], tau=0.5, group_size=2)
    with pytest.raises(ValueError, match="clip_eps"):
        ppo_clip_loss(logpi, logpi, rewards, mask, clip_eps=0.0)
    with pytest.raises(ValueError, match="advantages"):
        ppo_clip_loss(logpi, logpi, torch.zeros(3), mask, clip_eps=0.2)
