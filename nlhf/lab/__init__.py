"""The exact theory lab: preference games, their equilibria, Nash-MD and the PsiPO bandits.

numpy float64 + scipy only (no torch): this is the oracle every learning algorithm in
nlhf is tested against. THEORY.md Sec. 2-5 is the mathematics; each function cites it.

    from nlhf.lab import (PreferenceGame, nash_equilibrium, regularized_nash, exploitability,
                          regularized_exploitability, nash_md, pg_stationary_point)
    game = PreferenceGame(P)                 # P[i, j] = P(y_i > y_j); validated
    pi = nash_equilibrium(game)              # tau = 0, by linear programming
    pi_tau = regularized_nash(game, mu, tau) # the unique regularised equilibrium
    gap = exploitability(game, pi)           # max_y P(y > pi) - 1/2
    rgap = regularized_exploitability(game, pi, mu, tau)  # tau KL(pi, BR_tau(pi))
    traj = nash_md(game, mu, tau, steps=T)   # (T+1, n): pi_0 = mu, ..., pi_T
    row = sampling_point(P, nu, tau, mu)    # BT fit on pairs ~ nu x nu, RLHF optimum, Nash

Plots (:mod:`nlhf.lab.plots`) and the showcase experiments (:mod:`nlhf.lab.showcase`) are
imported on demand; matplotlib loads only when a figure is drawn.
"""

from nlhf.lab.dynamics import (
    ema_opponent_dynamics,
    fixed_mixture_dynamics,
    kl_from,
    mirror_descent,
    multiplicative_weights,
    nash_md,
    nash_md_step_size,
    running_average,
    step_sizes,
    theorem1_bound,
)
from nlhf.lab.games import (
    PreferenceGame,
    bradley_terry,
    nontransitive_dice,
    random_game,
    rater_population,
    rock_paper_scissors,
)
from nlhf.lab.psipo import (
    BANDIT_DATASETS,
    BanditRun,
    bandit_dataset,
    dpo_loss,
    dpo_loss_grad,
    empirical_preference,
    ipo_dataset_optimum,
    ipo_loss,
    ipo_loss_grad,
    psipo_optimum,
    rlhf_optimum,
    summarize_bandit,
    train_bandit,
)
from nlhf.lab.sampling_dependence import (
    fit_bradley_terry,
    fit_preference_model,
    sampling_point,
    sampling_sweep,
)
from nlhf.lab.simplex import geometric_mixture, kl
from nlhf.lab.solvers import (
    best_response,
    exploitability,
    nash_equilibrium,
    pg_stationary_point,
    regularized_best_response,
    regularized_exploitability,
    regularized_nash,
    regularized_preference,
    stationary_residual,
)

__all__ = [
    "BANDIT_DATASETS",
    "BanditRun",
    "PreferenceGame",
    "bandit_dataset",
    "best_response",
    "bradley_terry",
    "dpo_loss",
    "dpo_loss_grad",
    "ema_opponent_dynamics",
    "empirical_preference",
    "exploitability",
    "fit_bradley_terry",
    "fit_preference_model",
    "fixed_mixture_dynamics",
    "geometric_mixture",
    "ipo_dataset_optimum",
    "ipo_loss",
    "ipo_loss_grad",
    "kl",
    "kl_from",
    "mirror_descent",
    "multiplicative_weights",
    "nash_equilibrium",
    "nash_md",
    "nash_md_step_size",
    "nontransitive_dice",
    "pg_stationary_point",
    "psipo_optimum",
    "random_game",
    "rater_population",
    "regularized_best_response",
    "regularized_exploitability",
    "regularized_nash",
    "regularized_preference",
    "rlhf_optimum",
    "rock_paper_scissors",
    "running_average",
    "sampling_point",
    "sampling_sweep",
    "stationary_residual",
    "step_sizes",
    "summarize_bandit",
    "theorem1_bound",
    "train_bandit",
]
