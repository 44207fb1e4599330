"""PsiPO in the tabular case: exact optima of RLHF/DPO and IPO, and the Sec. 5.4 bandit runs.

THEORY.md Sec. 5. The PsiPO objective

    max_pi E_{y~pi, y'~nu}[ Psi(p*(y > y')) ] - tau KL(pi, pi_ref)

has the optimum pi*(y) proportional to pi_ref(y) exp(E_{y'~nu} Psi(p*(y > y')) / tau).
Psi = logit under Bradley-Terry gives RLHF and DPO; Psi = identity gives IPO.

The bandit experiment of the PsiPO paper (Sec. 5.4): actions {a, b, c} (or two actions),
no context, pi = softmax(theta), pi_ref uniform, sampled DPO and IPO losses, Adam with
lr 0.01, mini-batches of 9 pairs drawn with replacement, 18,000 steps, 10 seeds. Here
every (method, tau, seed) run is one row of a (R, n) parameter array and all rows step
together, so the full reproduction takes about a second per dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nlhf.lab.simplex import check_distribution, check_tau, log_softmax, softmax

# ----------------------------------------------------------------------------------------
# Datasets of Sec. 5.4: (names, pairs), each pair (winner, loser) as action indices.

BANDIT_DATASETS: dict[str, tuple[tuple[str, ...], tuple[tuple[int, int], ...]]] = {
    # D1 = {(a > b), (b > c), (a > c)}: transitive, every preference deterministic.
    "D1": (("a", "b", "c"), ((0, 1), (1, 2), (0, 2))),
    # D2 = {(a > b), (b > c), (c > a)}: a cycle.
    "D2": (("a", "b", "c"), ((0, 1), (1, 2), (2, 0))),
    # Two actions, y1 always preferred to y2.
    "two": (("y1", "y2"), ((0, 1),)),
}


def bandit_dataset(name: str) -> tuple[tuple[str, ...], np.ndarray]:
    """Return (action names, pairs (m, 2) of (winner, loser) indices) of a named dataset."""
    if name not in BANDIT_DATASETS:
        raise ValueError(f"unknown bandit dataset {name!r}; known: {sorted(BANDIT_DATASETS)}")
    names, pairs = BANDIT_DATASETS[name]
    return names, np.array(pairs, dtype=np.int64)


def _check_pairs(pairs, n: int) -> np.ndarray:
    pairs = np.asarray(pairs, dtype=np.int64)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.shape[0] < 1:
        raise ValueError(f"pairs: expected shape (m, 2) of (winner, loser), got {pairs.shape}")
    for k, (w, l) in enumerate(pairs):
        if not (0 <= w < n and 0 <= l < n) or w == l:
            raise ValueError(f"pairs[{k}] = ({w}, {l}): need two different actions in 0..{n - 1}")
    return pairs


def empirical_preference(pairs, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The data's preference p_hat and behaviour distribution nu_hat (THEORY Sec. 5).

    p_hat[y, y'] = fraction of the comparisons of y with y' that y won (1/2 when the pair
    never appears, and on the diagonal); nu_hat[y] = share of response slots holding y.
    Returns (p_hat (n, n), nu_hat (n,)).
    """
    pairs = _check_pairs(pairs, n)
    wins = np.zeros((n, n))
    for w, l in pairs:
        wins[w, l] += 1.0
    total = wins + wins.T
    with np.errstate(invalid="ignore", divide="ignore"):
        p_hat = np.where(total > 0, wins / np.where(total > 0, total, 1.0), 0.5)
    nu_hat = np.bincount(pairs.ravel(), minlength=n) / pairs.size
    return p_hat, nu_hat


# ----------------------------------------------------------------------------------------
# Exact optima (THEORY Sec. 5)


def rlhf_optimum(reward, ref, tau: float) -> np.ndarray:
    """RLHF's KL-regularised optimum pi(y) proportional to pi_ref(y) exp(r(y)/tau) (THEORY Sec. 5).

    Under Bradley-Terry it is also the optimum of DPO's population objective.
    """
    r = np.asarray(reward, dtype=np.float64)
    ref = check_distribution(ref, "ref", r.shape[0], positive=True)
    tau = check_tau(tau)
    return softmax(np.log(ref) + r / tau)


def psipo_optimum(preference, behavior, ref, tau: float, psi: str = "identity") -> np.ndarray:
    """The PsiPO optimum pi*(y) proportional to pi_ref(y) exp(E_{y'~nu} Psi(p*(y > y'))/tau).

    THEORY Sec. 5. ``psi="identity"`` is IPO (unique, always regularised).
    ``psi="logit"`` is RLHF/DPO under Bradley-Terry: when p* = sigmoid(r_y - r_y') it equals
    :func:`rlhf_optimum` for any behaviour nu. With deterministic entries (p* in {0, 1})
    logit is infinite and this returns the limit of the optimum as those entries approach
    0/1: with c(y) = sum_y' nu(y') ([p*(y > y') = 1] - [p*(y > y') = 0]), all mass goes to
    argmax c (among those, proportional to pi_ref exp(finite part / tau)), whatever tau is
    -- the DPO collapse where the KL term stops regularising.
    """
    from nlhf.lab.solvers import as_game

    P = as_game(preference).P
    n = P.shape[0]
    nu = check_distribution(behavior, "behavior", n)
    ref = check_distribution(ref, "ref", n, positive=True)
    tau = check_tau(tau)
    if psi == "identity":
        return softmax(np.log(ref) + (P @ nu) / tau)
    if psi != "logit":
        raise ValueError(f"psi must be 'identity' or 'logit', got {psi!r}")
    sure_win = P == 1.0
    sure_loss = P == 0.0
    finite = ~(sure_win | sure_loss)
    with np.errstate(divide="ignore"):
        psi_finite = np.where(
            finite, np.log(np.where(finite, P, 0.5)) - np.log1p(-np.where(finite, P, 0.5)), 0.0
        )
    expected_finite = psi_finite @ nu  # (n,)
    infinite_coef = (sure_win.astype(float) - sure_loss.astype(float)) @ nu  # c(y), (n,)
    logits = np.log(ref) + expected_finite / tau
    top = infinite_coef >= infinite_coef.max() - 1e-12
    return softmax(np.where(top, logits, -np.inf))


def ipo_dataset_optimum(pairs, n: int, tau: float, ref=None) -> np.ndarray:
    """Minimiser of the sampled IPO loss over a dataset: the policy Adam trains to.

    THEORY Sec. 5 (PsiPO Eq. 17): sum over the data's pairs of
    (h(y_w, y_l) - 1/(2 tau))^2 with h = log[pi(y_w) ref(y_l) / (pi(y_l) ref(y_w))] and
    pi = softmax(theta): a linear least-squares problem in theta (h is theta_w - theta_l
    minus the reference's log-ratio). Solved by ``lstsq`` (minimum norm: unique up to the
    constant when the comparison graph is connected). On D1 the gaps are
    theta_a - theta_b = theta_b - theta_c = 1/(3 tau); with two actions pi(y1) = sigmoid(0.5/tau).
    """
    pairs = _check_pairs(pairs, n)
    tau = check_tau(tau)
    log_ref = np.zeros(n) if ref is None else np.log(check_distribution(ref, "ref", n, positive=True))
    m = pairs.shape[0]
    B = np.zeros((m, n))  # incidence rows e_w - e_l, (m, n)
    B[np.arange(m), pairs[:, 0]] = 1.0
    B[np.arange(m), pairs[:, 1]] = -1.0
    target = 1.0 / (2.0 * tau) + log_ref[pairs[:, 0]] - log_ref[pairs[:, 1]]  # (m,)
    theta, *_ = np.linalg.lstsq(B, target, rcond=None)
    return softmax(theta)


# ----------------------------------------------------------------------------------------
# Sampled losses as functions of the log-ratio margin h (THEORY Sec. 5)


def dpo_loss(log_ratio_margin, tau: float) -> np.ndarray:
    """DPO: -log sigmoid(tau h), elementwise (h = log_ratio_margin)."""
    h = np.asarray(log_ratio_margin, dtype=np.float64)
    return np.logaddexp(0.0, -tau * h)


def dpo_loss_grad(log_ratio_margin, tau: float) -> np.ndarray:
    """d/dh of :func:`dpo_loss`: -tau sigmoid(-tau h)."""
    from scipy.special import expit

    return -tau * expit(-tau * np.asarray(log_ratio_margin, dtype=np.float64))


def ipo_loss(log_ratio_margin, tau: float, label=1.0) -> np.ndarray:
    """IPO (PsiPO Eq. 17): (h - (p - 1/2)/tau)^2, p = P(y_w > y_l); p = 1 gives (h - 1/(2 tau))^2."""
    h = np.asarray(log_ratio_margin, dtype=np.float64)
    return (h - (np.asarray(label) - 0.5) / tau) ** 2


def ipo_loss_grad(log_ratio_margin, tau: float, label=1.0) -> np.ndarray:
    """d/dh of :func:`ipo_loss`: 2 (h - (p - 1/2)/tau)."""
    h = np.asarray(log_ratio_margin, dtype=np.float64)
    return 2.0 * (h - (np.asarray(label) - 0.5) / tau)


# ----------------------------------------------------------------------------------------
# The Sec. 5.4 bandit experiment, vectorised over methods x taus x seeds

BANDIT_METHODS = ("dpo", "ipo")


@dataclass(frozen=True)
class BanditRun:
    """Result of :func:`train_bandit`. Arrays are indexed [method, tau, seed, ...].

    curves: (M, K, S, R, n) action probabilities at ``record_steps`` (R records).
    final:  (M, K, S, n) action probabilities after the last step.
    """

    dataset: str
    actions: tuple[str, ...]
    pairs: np.ndarray  # (m, 2) of (winner, loser)
    methods: tuple[str, ...]
    taus: tuple[float, ...]
    seeds: tuple[int, ...]
    steps: int
    batch_size: int
    lr: float
    record_steps: np.ndarray  # (R,)
    curves: np.ndarray  # (M, K, S, R, n)
    final: np.ndarray  # (M, K, S, n)


def _bandit_pairs(
    dataset: str | Sequence[tuple[int, int]], n_actions: int | None
) -> tuple[str, tuple, np.ndarray]:
    """(name, action names (n,), checked (m, 2) pairs (winner, loser)) of a named dataset or a custom list."""
    if isinstance(dataset, str):
        actions, pairs = bandit_dataset(dataset)
        return dataset, tuple(actions), _check_pairs(pairs, len(actions))
    if n_actions is None:
        raise ValueError("n_actions is required with a custom list of pairs")
    return "custom", tuple(f"y{i}" for i in range(n_actions)), _check_pairs(dataset, n_actions)


def _batch_weights(seeds: Sequence[int], steps: int, batch_size: int, m: int) -> np.ndarray:
    """Mini-batch draws as the weight of each dataset pair per step: (steps, S, m), each row summing to 1.

    Seed s draws ``batch_size`` pair indices per step with ``np.random.default_rng(s)``.
    """
    counts = np.empty((steps, len(seeds), m))
    for s_idx, seed in enumerate(seeds):
        draws = np.random.default_rng(seed).integers(0, m, size=(steps, batch_size))
        for k in range(m):
            counts[:, s_idx, k] = (draws == k).sum(axis=1)
    return counts / batch_size  # mean over the batch


def _bandit_settings(
    methods: Sequence[str],
    taus: Sequence[float],
    seeds: int | Sequence[int],
    steps: int,
    batch_size: int,
    lr: float,
) -> tuple[tuple[str, ...], tuple[float, ...], tuple[int, ...]]:
    """(methods, taus, seeds) checked, as tuples (``seeds`` an int n: seeds 0..n-1); steps, batch_size, lr checked."""
    methods = tuple(methods)
    for m_name in methods:
        if m_name not in BANDIT_METHODS:
            raise ValueError(f"unknown method {m_name!r}; known: {BANDIT_METHODS}")
    taus = tuple(check_tau(t) for t in taus)
    seeds = tuple(range(seeds)) if isinstance(seeds, int) else tuple(int(s) for s in seeds)
    if steps < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"need steps >= 1, batch_size >= 1 and lr > 0 (got {steps}, {batch_size}, {lr})")
    return methods, taus, seeds


def train_bandit(
    dataset: str | Sequence[tuple[int, int]],
    taus: Sequence[float] = (0.1, 0.5, 1.0),
    seeds: int | Sequence[int] = 10,
    steps: int = 18_000,
    batch_size: int = 9,
    lr: float = 0.01,
    methods: Sequence[str] = BANDIT_METHODS,
    n_actions: int | None = None,
    record_every: int = 50,
    adam_betas: tuple[float, float] = (0.9, 0.999),
    adam_eps: float = 1e-8,
) -> BanditRun:
    """Train pi = softmax(theta) with the sampled DPO and IPO losses (PsiPO Sec. 5.4).

    theta starts at 0 (pi = pi_ref = uniform). Each step draws ``batch_size`` pairs
    uniformly with replacement from the dataset (seed s uses ``np.random.default_rng(s)``;
    every method and tau sees the same draws for the same seed), takes the mean loss over
    the batch, with h = log[pi(y_w) ref(y_l)/(pi(y_l) ref(y_w))] = theta_w - theta_l, and
    one Adam step (betas 0.9/0.999, eps 1e-8, bias-corrected). All M x K x S runs are one
    (M*K*S, n) array stepping together.
    """
    name, actions, pairs = _bandit_pairs(dataset, n_actions)
    n = len(actions)
    methods, taus, seeds = _bandit_settings(methods, taus, seeds, steps, batch_size, lr)
    M, K, S, m = len(methods), len(taus), len(seeds), pairs.shape[0]
    R = M * K * S

    # Per-run constants, rows ordered (method, tau, seed).
    method_of = np.repeat(np.arange(M), K * S)  # (R,)
    tau_of = np.tile(np.repeat(np.array(taus), S), M)  # (R,)
    seed_of = np.tile(np.arange(S), M * K)  # (R,)
    is_ipo = np.array([methods[i] == "ipo" for i in method_of])[:, None]  # (R, 1)
    tau_col = tau_of[:, None]  # (R, 1)

    E = np.zeros((m, n))  # d h_k / d theta = e_w - e_l, (m, n)
    E[np.arange(m), pairs[:, 0]] = 1.0
    E[np.arange(m), pairs[:, 1]] = -1.0

    counts = _batch_weights(seeds, steps, batch_size, m)  # (steps, S, m)

    record_steps = np.unique(np.r_[np.arange(0, steps, record_every), steps])
    curves = np.empty((R, record_steps.size, n))
    theta = np.zeros((R, n))
    adam_m = np.zeros((R, n))
    adam_v = np.zeros((R, n))
    b1, b2 = adam_betas
    from scipy.special import expit

    rec = 0
    for t in range(steps + 1):
        if rec < record_steps.size and record_steps[rec] == t:
            curves[:, rec] = softmax(theta)
            rec += 1
        if t == steps:
            break
        h = theta @ E.T  # (R, m): log-ratio margin of every dataset pair (uniform ref)
        dloss_dh = np.where(is_ipo, 2.0 * (h - 0.5 / tau_col), -tau_col * expit(-tau_col * h))  # (R, m)
        grad = (counts[t][seed_of] * dloss_dh) @ E  # (R, n)
        adam_m = b1 * adam_m + (1.0 - b1) * grad
        adam_v = b2 * adam_v + (1.0 - b2) * grad * grad
        m_hat = adam_m / (1.0 - b1 ** (t + 1))
        v_hat = adam_v / (1.0 - b2 ** (t + 1))
        theta -= lr * m_hat / (np.sqrt(v_hat) + adam_eps)

    final = np.exp(log_softmax(theta))
    return BanditRun(
        dataset=name,
        actions=tuple(actions),
        pairs=pairs,
        methods=methods,
        taus=taus,
        seeds=seeds,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        record_steps=record_steps,
        curves=curves.reshape(M, K, S, record_steps.size, n),
        final=final.reshape(M, K, S, n),
    )


def summarize_bandit(run: BanditRun) -> dict:
    """Per method and tau: mean final probabilities with a 95% t-interval over seeds.

    Also the closed-form IPO optimum of the dataset (:func:`ipo_dataset_optimum`). The
    interval is mean +- t_{0.975, S-1} sd / sqrt(S) (a confidence interval for the mean;
    zero width with one seed).
    """
    from scipy.stats import t as student_t

    names, pairs = run.actions, run.pairs
    S = len(run.seeds)
    t_crit = float(student_t.ppf(0.975, S - 1)) if S > 1 else 0.0
    out: dict = {
        "dataset": run.dataset,
        "actions": list(names),
        "steps": run.steps,
        "batch_size": run.batch_size,
        "lr": run.lr,
        "seeds": list(run.seeds),
        "interval": "95% t-interval of the mean over seeds",
        "methods": {},
    }
    for mi, method in enumerate(run.methods):
        per_tau = {}
        for ki, tau in enumerate(run.taus):
            probs = run.final[mi, ki]  # (S, n)
            mean = probs.mean(axis=0)
            half = t_crit * probs.std(axis=0, ddof=1) / np.sqrt(S) if S > 1 else np.zeros_like(mean)
            entry = {
                "mean": mean.tolist(),
                "ci95_low": (mean - half).tolist(),
                "ci95_high": (mean + half).tolist(),
                "per_seed": probs.tolist(),
            }
            if method == "ipo":
                entry["closed_form"] = ipo_dataset_optimum(pairs, len(names), tau).tolist()
            per_tau[f"{tau:g}"] = entry
        out["methods"][method] = per_tau
    return out
