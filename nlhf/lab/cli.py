"""``nlhf lab``: the exact theory lab on the command line (nash, nash-md, ipo-bandit).

Registered by :mod:`nlhf.cli` through :func:`register`. Nothing heavy is imported here:
numpy/scipy load with :mod:`nlhf.lab` when a command runs, matplotlib only for plots.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

GAMES = ("rps", "random", "tournament", "raters", "dice", "bt")

LAB_DESCRIPTION = """\
The exact theory lab: small preference games solved exactly (no sampling, no neural nets).

A preference game is a matrix P with P[i, j] = probability that response i is preferred
to response j. Its Nash equilibrium is the mixed policy that no other policy beats (NLHF);
with a KL penalty of strength tau towards a reference policy mu it becomes the unique
regularised equilibrium pi*_tau. The commands:

  nash        solve a game: the Nash equilibrium (tau = 0) and pi*_tau
  nash-md     run the Nash-MD algorithm exactly and watch it converge to pi*_tau
  ipo-bandit  reproduce the IPO-vs-DPO bandit experiment of the PsiPO paper (Sec. 5.4)
  sampling-dependence  RLHF's reward moves with the sampling distribution; Nash does not
  compare     every algorithm of the lab (Nash-MD, SPPO, INPO, DNO, MPO, mirror prox, ...)
              on the same games: distance to its target and exploitability after T steps
"""

GAME_HELP = (
    "which game: rps = rock-paper-scissors; random = random entries in [0, 1] (--n, --seed); "
    "tournament = random entries in {0, 1}; raters = three rater types whose majority is a "
    "Condorcet cycle a > b > c > a (NLHF Sec. 3.2; --weights); dice = non-transitive dice, "
    "each beats the next with probability 5/9 (NLHF App. C); bt = Bradley-Terry scores 0..2"
)


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _add_game_args(p: argparse.ArgumentParser, default_game: str = "rps") -> None:
    p.add_argument(
        "--game", choices=GAMES, default=default_game, help=GAME_HELP + f" (default {default_game})"
    )
    p.add_argument(
        "--n", type=int, default=10, help="number of responses for random/tournament games (default 10)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of random/tournament games (default 0)")
    p.add_argument(
        "--weights",
        type=_floats,
        default=None,
        help="raters only: shares of the three rater types, e.g. 0.4,0.35,0.25 (the default)",
    )
    p.add_argument(
        "--mu",
        type=_floats,
        default=None,
        help="reference policy mu as comma-separated probabilities (default uniform)",
    )


def _make_game(args):
    from nlhf.lab.showcase import CONDORCET_WEIGHTS, named_game

    return named_game(args.game, n=args.n, seed=args.seed, weights=args.weights or CONDORCET_WEIGHTS)


def _mu(args, n: int):
    import numpy as np

    from nlhf.lab.simplex import check_distribution

    if args.mu is None:
        return np.full(n, 1.0 / n)
    return check_distribution(args.mu, "--mu", n, positive=True)


def _print_table(names, columns: dict[str, list[float]]) -> None:
    width = max(8, max(len(n) for n in names))
    print(f"{'response':<{width}}  " + "  ".join(f"{c:>12}" for c in columns))
    for i, name in enumerate(names):
        print(f"{name:<{width}}  " + "  ".join(f"{columns[c][i]:>12.6f}" for c in columns))


def _fail(command: str, exc: Exception) -> int:
    print(f"nlhf lab {command}: error: {exc}", file=sys.stderr)
    return 2


def cmd_nash(args) -> int:
    """``nlhf lab nash``: print the Nash equilibrium and pi*_tau of a game."""
    try:
        from nlhf.lab.showcase import solve_game

        game = _make_game(args)
        mu = _mu(args, game.n)
        result = solve_game(game, args.tau, mu)
    except ValueError as exc:
        return _fail("nash", exc)
    if args.json:
        print(json.dumps({"game": args.game, **result}, indent=2))
        return 0
    print(f"game: {args.game} ({game.n} responses), tau = {args.tau:g}")
    columns = {"Nash": result["nash"], "mu": result["mu"], "pi*_tau": result["pi_tau"]}
    if game.n <= 40:
        _print_table(game.names, columns)
    else:
        print(f"(table skipped for n = {game.n}; use --json)")
    print(f"exploitability of Nash         max_y P(y > pi) - 1/2 = {result['nash_exploitability']:.3e}")
    print(f"fixed-point residual of pi*_tau max|pi - BR_tau(pi)|   = {result['pi_tau_residual']:.3e}")
    print(f"exploitability of pi*_tau in the unregularised game    = {result['pi_tau_exploitability']:.4f}")
    return 0


def cmd_nash_md(args) -> int:
    """``nlhf lab nash-md``: run exact Nash-MD and report its distance to pi*_tau."""
    import numpy as np

    try:
        from nlhf.lab.dynamics import kl_from, nash_md, theorem1_bound
        from nlhf.lab.solvers import pg_stationary_point, regularized_nash

        game = _make_game(args)
        mu = _mu(args, game.n)
        traj = nash_md(game, mu, args.tau, args.steps, eta=args.eta)
        pi_tau = regularized_nash(game, mu, args.tau)
    except ValueError as exc:
        return _fail("nash-md", exc)
    kl = kl_from(pi_tau, traj)
    schedule = "eta_t = 2/(tau (t+2))" if args.eta is None else f"constant eta = {args.eta:g}"
    print(f"Nash-MD on {args.game} ({game.n} responses), tau = {args.tau:g}, {schedule}, {args.steps} steps")
    print(f"{'t':>8}  {'KL(pi*_tau, pi_t)':>18}  {'Theorem 1 bound':>16}")
    checkpoints = sorted(
        {int(t) for t in np.unique(np.geomspace(1, args.steps, 12).astype(int))} | {args.steps}
    )
    for t in checkpoints:
        bound = f"{theorem1_bound(args.tau, t):16.3e}" if args.eta is None else f"{'-':>16}"
        print(f"{t:>8}  {kl[t]:18.3e}  {bound}")
    result = {
        "game": args.game,
        "tau": args.tau,
        "eta": args.eta,
        "steps": args.steps,
        "names": list(game.names),
        "pi_T": traj[-1].tolist(),
        "pi_tau": pi_tau.tolist(),
        "kl_final": float(kl[-1]),
    }
    if args.eta is not None:
        beta = args.eta * args.tau
        stationary = pg_stationary_point(game, mu, args.tau, beta)
        result["pg_stationary_point"] = stationary.tolist()
        gap = float(np.max(np.abs(traj[-1] - stationary)))
        print(
            f"constant eta: Nash-MD converges to pg_stationary_point(beta = eta tau = {beta:g}), "
            f"not to pi*_tau; max|pi_T - that point| = {gap:.2e}"
        )
    if game.n <= 40:
        _print_table(game.names, {"pi_T": result["pi_T"], "pi*_tau": result["pi_tau"]})
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "nash_md.json").write_text(json.dumps(result, indent=2))
        if game.n == 3:
            from nlhf.lab.plots import plot_dynamics
            from nlhf.lab.showcase import compare_dynamics

            comparison = compare_dynamics(game, mu, args.tau, args.steps)
            print(f"plot: {plot_dynamics(comparison, out / 'dynamics.png')}")
        print(f"wrote {out / 'nash_md.json'}")
    return 0


def cmd_ipo_bandit(args) -> int:
    """``nlhf lab ipo-bandit``: the PsiPO Sec. 5.4 experiment, DPO vs IPO."""
    import time

    try:
        from nlhf.lab.showcase import bandit_showcase

        out = Path(args.out or f"runs/ipo-bandit-{args.dataset}")
        start = time.perf_counter()
        results = bandit_showcase(
            out,
            datasets=(args.dataset,),
            taus=tuple(args.tau),
            seeds=args.seeds,
            steps=args.steps,
            plot=not args.no_plot,
        )
    except ValueError as exc:
        return _fail("ipo-bandit", exc)
    summary = results[args.dataset]
    seconds = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    print(
        f"dataset {args.dataset}: {args.seeds} seeds x {args.steps} steps, batch 9, Adam lr 0.01 "
        f"({seconds:.1f} s)"
    )
    actions = summary["actions"]
    for method, per_tau in summary["methods"].items():
        for tau, entry in per_tau.items():
            probs = "  ".join(
                f"{a}={m:.4f} [{lo:.4f}, {hi:.4f}]"
                for a, m, lo, hi in zip(actions, entry["mean"], entry["ci95_low"], entry["ci95_high"])
            )
            closed = entry.get("closed_form")
            extra = "  closed form " + " ".join(f"{c:.4f}" for c in closed) if closed else ""
            print(f"  {method.upper():<3} tau={tau:<5} {probs}{extra}")
    print(f"wrote {out / 'results.json'}" + ("" if args.no_plot else f" and {summary['plot']}"))
    return 0


def _path(text: str) -> tuple[list[float], list[float]]:
    """Parse ``a1,a2,..:b1,b2,..`` (the two ends of a path of sampling distributions)."""
    ends = text.split(":")
    if len(ends) != 2:
        raise argparse.ArgumentTypeError(f"expected START:END, e.g. 0.6,0.2,0.2:0.2,0.2,0.6, got {text!r}")
    return _floats(ends[0]), _floats(ends[1])


def cmd_sampling_dependence(args) -> int:
    """``nlhf lab sampling-dependence``: RLHF's answer moves with the sampling distribution, Nash's does not."""
    import numpy as np

    try:
        from nlhf.lab import plots
        from nlhf.lab import sampling_dependence as sd

        game = _make_game(args)
        mu = _mu(args, game.n)
        if args.path is None and game.n != 3:
            raise ValueError(f"--grid needs a 3-response game; for {game.n} responses give --path START:END")
        if args.path is None:
            corners, behaviors = sd.simplex_cells(args.grid)
        else:
            behaviors = sd.simplex_path(*args.path, points=args.points)
        result = sd.sampling_sweep(game, behaviors, args.tau, mu)
    except ValueError as exc:
        return _fail("sampling-dependence", exc)
    family = f"grid of {len(behaviors)} cells (--grid {args.grid})" if args.path is None else "path"
    print(
        f"game: {args.game} ({game.n} responses {', '.join(game.names)}), tau = {args.tau:g}, mu = {_fmt_mu(mu)}"
    )
    print(f"sampling distributions nu: {family}; pairs y, y' ~ nu x nu labelled with P(y > y')")
    print("\n".join(sd.format_table(result)))
    out = Path(args.out or f"runs/sampling-dependence-{args.game}")
    out.mkdir(parents=True, exist_ok=True)
    result["game"] = args.game
    result["family"] = (
        {"grid": args.grid} if args.path is None else {"path": list(args.path), "points": args.points}
    )
    (out / "sampling_dependence.json").write_text(json.dumps(result, indent=2))
    if args.path is None:
        figure = plots.plot_sampling_ternary(result, corners, out / "sampling_dependence.png")
    else:
        figure = plots.plot_sampling_path(
            result, np.linspace(0.0, 1.0, args.points), out / "sampling_dependence.png"
        )
    print(f"wrote {out / 'sampling_dependence.json'} and {figure}")
    return 0


def _fmt_mu(mu) -> str:
    if max(mu) - min(mu) < 1e-15:
        return "uniform"
    return "(" + ", ".join(f"{m:g}" for m in mu) + ")"


def cmd_compare(args) -> int:
    """``nlhf lab compare``: one table over every algorithm of the lab, exact dynamics."""
    try:
        from nlhf.lab.compare import compare, format_table, format_trainer_table

        checkpoints = sorted({t for t in (10, 100, 1000) if t < args.steps} | {args.steps})
        result = compare(args.games, tau=args.tau, eta=args.eta, checkpoints=checkpoints)
    except ValueError as exc:
        return _fail("compare", exc)
    print(format_table(result))
    print("\nThe trainers on one-token games (tests/test_successors_vs_lab*.py):\n" + format_trainer_table())
    out = Path(args.out or "runs/lab-compare")
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(result))
    if not args.no_plot:
        from nlhf.lab.plots import plot_compare

        print(f"plot: {plot_compare(result, out / 'compare.png')}")
    print(f"wrote {out / 'compare.json'}")
    return 0


def _register_compare(sub, fmt) -> None:
    """The ``nlhf lab compare`` sub-command."""
    cmp = sub.add_parser(
        "compare",
        help="every algorithm of the lab on the same games: distance to target, exploitability",
        formatter_class=fmt,
        description="Run every algorithm of the lab exactly on the same games (THEORY.md Sec. 3-8):\n"
        "Nash-MD, INPO (= mirror descent against pi_t), the fixed-mixture best response, Nash-EMA,\n"
        "Nash mirror prox, MPO, multiplicative weights, SPPO (last iterate and average), DNO (last\n"
        "and average), and the IPO and DPO/RLHF optima. For each: the total variation of pi_T to\n"
        "its target and its exploitability max_y P(y > pi_T) - 1/2 at T = 10, 100, 1000, and what\n"
        "it is seen to converge to. Prints a markdown table, writes compare.json and compare.png\n"
        "(distance vs T, log-log, one panel per game) into --out.",
        epilog="examples:\n  nlhf lab compare\n  nlhf lab compare --games rps,random20 --tau 0.05 --out runs/cmp",
    )
    cmp.add_argument(
        "--games",
        type=lambda text: [g for g in text.split(",") if g],
        default=["rps", "random5", "random50"],
        help="comma-separated games: rps (mu = 0.6,0.3,0.1) and random<n> (random_game(n, seed 0), "
        "uniform mu) (default rps,random5,random50)",
    )
    cmp.add_argument("--tau", type=float, default=0.1, help="KL strength tau > 0 (default 0.1)")
    cmp.add_argument(
        "--eta", type=float, default=1.0, help="step of every constant-step method (default 1; eta tau <= 1)"
    )
    cmp.add_argument("--steps", type=int, default=1000, help="last T (default 1000; checkpoints 10, 100, T)")
    cmp.add_argument("--out", default=None, help="output directory (default runs/lab-compare)")
    cmp.add_argument("--no-plot", action="store_true", help="skip compare.png")
    cmp.set_defaults(func=cmd_compare)


def register(subparsers) -> None:
    """Add ``nlhf lab`` and its sub-commands to the top-level ``subparsers``."""
    fmt = argparse.RawDescriptionHelpFormatter
    lab = subparsers.add_parser(
        "lab",
        help="exact theory lab: equilibria, Nash-MD, IPO/DPO bandits",
        description=LAB_DESCRIPTION,
        formatter_class=fmt,
    )
    lab.set_defaults(func=lambda _args: (lab.print_help(), 2)[1])
    sub = lab.add_subparsers(dest="lab_command", metavar="LAB_COMMAND")

    _register_nash(sub, fmt)
    _register_nash_md(sub, fmt)
    _register_ipo_bandit(sub, fmt)
    _register_sampling_dependence(sub, fmt)
    _register_compare(sub, fmt)


def _register_nash(sub, fmt) -> None:
    """``nlhf lab nash``: the Nash equilibrium and the regularised equilibrium of a game."""
    nash = sub.add_parser(
        "nash",
        help="solve a preference game: Nash equilibrium and regularised equilibrium",
        formatter_class=fmt,
        description="Solve a preference game exactly.\n\n"
        "Prints the Nash equilibrium (tau = 0, by linear programming) and the regularised\n"
        "equilibrium pi*_tau, proportional to mu exp(P(y > pi*_tau)/tau), with their checks.",
        epilog="examples:\n  nlhf lab nash --game rps\n  nlhf lab nash --game raters --weights 0.5,0.3,0.2 --tau 0.05\n"
        "  nlhf lab nash --game tournament --n 200 --seed 3 --json",
    )
    _add_game_args(nash)
    nash.add_argument(
        "--tau",
        type=float,
        default=0.1,
        help="KL strength of the regularised equilibrium (default 0.1; larger = closer to mu)",
    )
    nash.add_argument("--json", action="store_true", help="print the full result as JSON")
    nash.set_defaults(func=cmd_nash)


def _register_nash_md(sub, fmt) -> None:
    """``nlhf lab nash-md``: exact Nash-MD on a game, from pi_0 = mu."""
    md = sub.add_parser(
        "nash-md",
        help="run exact Nash-MD and watch it converge to pi*_tau",
        formatter_class=fmt,
        description="Run Nash-MD (NLHF Eq. 3-5) exactly on a game, starting from pi_0 = mu.\n\n"
        "Each step mixes the policy with mu (geometric mixture, weight eta tau on mu) and takes a\n"
        "mirror-descent step against that mixture. With the default step eta_t = 2/(tau (t+2)) the\n"
        "last iterate converges to pi*_tau (Theorem 1); with a constant --eta it converges to a\n"
        "biased point instead (the stationary point with mixture coefficient beta = eta tau).",
        epilog="examples:\n  nlhf lab nash-md --game rps --mu 0.6,0.3,0.1 --tau 0.1 --steps 2000 --out runs/md\n"
        "  nlhf lab nash-md --game random --n 50 --tau 0.05 --eta 2",
    )
    _add_game_args(md)
    md.add_argument("--tau", type=float, default=0.1, help="KL strength tau > 0 (default 0.1)")
    md.add_argument("--steps", type=int, default=1000, help="number of Nash-MD steps T (default 1000)")
    md.add_argument(
        "--eta",
        type=float,
        default=None,
        help="constant step size (must satisfy eta * tau <= 1); default: 2/(tau (t+2))",
    )
    md.add_argument(
        "--out",
        default=None,
        help="directory for nash_md.json (and, for 3-action games, dynamics.png comparing "
        "Nash-MD with mirror descent and multiplicative weights)",
    )
    md.set_defaults(func=cmd_nash_md)


def _register_ipo_bandit(sub, fmt) -> None:
    """``nlhf lab ipo-bandit``: the PsiPO paper's IPO-vs-DPO bandit experiment."""
    bandit = sub.add_parser(
        "ipo-bandit",
        help="reproduce the PsiPO paper's IPO-vs-DPO bandit experiment",
        formatter_class=fmt,
        description="Train a softmax policy over 2-3 actions with the sampled DPO and IPO losses\n"
        "(PsiPO Sec. 5.4: uniform reference, Adam lr 0.01, mini-batches of 9 pairs drawn with\n"
        "replacement). Datasets: D1 = {a>b, b>c, a>c}; D2 = {a>b, b>c, c>a} (a cycle);\n"
        "two = two actions, the first always preferred. DPO drives the loser's probability to 0\n"
        "whatever tau is; IPO stays at its regularised closed form (on D1 the logit gaps are\n"
        "1/(3 tau)). Writes results.json (per method and tau: mean final probabilities and a\n"
        "95% interval over seeds) and learning-curve plots into --out.",
        epilog="example:\n  nlhf lab ipo-bandit --dataset D1 --tau 0.1 0.5 1 --seeds 10 --out runs/bandit-D1",
    )
    bandit.add_argument(
        "--dataset", choices=("D1", "D2", "two"), default="D1", help="preference dataset (default D1)"
    )
    bandit.add_argument(
        "--tau",
        type=float,
        nargs="+",
        default=[0.1, 0.5, 1.0],
        help="one or more regularisation strengths (default 0.1 0.5 1)",
    )
    bandit.add_argument("--seeds", type=int, default=10, help="number of seeds (default 10)")
    bandit.add_argument("--steps", type=int, default=18_000, help="Adam steps per run (default 18000)")
    bandit.add_argument("--out", default=None, help="output directory (default runs/ipo-bandit-<dataset>)")
    bandit.add_argument("--no-plot", action="store_true", help="skip the learning-curve plot")
    bandit.set_defaults(func=cmd_ipo_bandit)


def _register_sampling_dependence(sub, fmt) -> None:
    """Add ``nlhf lab sampling-dependence`` to the lab's ``sub`` parsers."""
    sd = sub.add_parser(
        "sampling-dependence",
        help="a reward model depends on the sampling distribution; the Nash equilibrium does not",
        formatter_class=fmt,
        description="Fit both judges on pairs y, y' drawn from a sampling distribution nu and labelled\n"
        "with P(y > y') (population maximum likelihood, exact): the Bradley-Terry reward r_nu, and\n"
        "the pairwise preference model. For each nu print r_nu, the class RLHF picks (argmax r_nu),\n"
        "the RLHF optimum mu exp(r_nu/tau)/Z and its exploitability, against the Nash equilibrium\n"
        "of the preference model, which is the same from every nu (THEORY Sec. 7.1).\n"
        "3-response games: nu over a grid of the simplex, with a ternary map of RLHF's choice;\n"
        "any game: nu along a path START:END, with the path plot. Writes sampling_dependence.json\n"
        "and sampling_dependence.png into --out.",
        epilog="examples:\n  nlhf lab sampling-dependence --game raters --grid 24 --out runs/sd-raters\n"
        "  nlhf lab sampling-dependence --game random --n 5 --path 0.6,0.1,0.1,0.1,0.1:0.1,0.1,0.1,0.1,0.6",
    )
    _add_game_args(sd, default_game="raters")
    sd.add_argument(
        "--tau", type=float, default=0.1, help="KL strength of the RLHF optimum and of pi*_tau (default 0.1)"
    )
    family = sd.add_mutually_exclusive_group()
    family.add_argument(
        "--grid", type=int, default=24, help="3-response games: cut the simplex into K^2 cells (default 24)"
    )
    family.add_argument(
        "--path",
        type=_path,
        default=None,
        help="START:END, two sampling distributions, e.g. 0.6,0.2,0.2:0.2,0.2,0.6",
    )
    sd.add_argument("--points", type=int, default=11, help="--path only: number of points (default 11)")
    sd.add_argument("--out", default=None, help="output directory (default runs/sampling-dependence-<game>)")
    sd.set_defaults(func=cmd_sampling_dependence)
