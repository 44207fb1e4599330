"""Speed of the exact lab on one core; one JSON line per case.

    OMP_NUM_THREADS=1 python benchmarks/bench_lab.py [--repeat 3]

Cases and targets (issue 2):
* regularized_nash on 1000 x 1000 games (uniform entries and {0, 1} tournaments;
  tau in {0.02, 0.1, 0.5}, mu uniform): under 2 s each, residual <= 1e-12;
* nash_md, 10,000 exact steps on a 100 x 100 game: under 1 s;
* the full PsiPO Sec. 5.4 bandit reproduction (D1, D2, two actions; DPO and IPO;
  tau 0.1, 0.5, 1; 10 seeds; 18,000 steps; no plots): under 60 s.
"seconds" is the best of --repeat runs (the machine is shared).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from nlhf.lab import nash_md, random_game, regularized_nash, stationary_residual, train_bandit  # noqa: E402


def best_time(fn, repeat: int):
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def emit(record: dict) -> None:
    record["ok"] = bool(record["seconds"] <= record["target_seconds"] and record.get("accurate", True))
    print(json.dumps(record), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per case; the best is reported")
    args = parser.parse_args()
    threads = os.environ["OMP_NUM_THREADS"]

    n = 1000
    mu = np.full(n, 1.0 / n)
    for kind in ("uniform", "tournament"):
        game = random_game(n, seed=0, kind=kind)
        for tau in (0.02, 0.1, 0.5):
            seconds, pi = best_time(lambda g=game, t=tau: regularized_nash(g, mu, t), args.repeat)
            residual = stationary_residual(game, pi, mu, tau)
            emit(
                {
                    "benchmark": "regularized_nash",
                    "game": kind,
                    "n": n,
                    "tau": tau,
                    "seconds": round(seconds, 4),
                    "target_seconds": 2.0,
                    "residual": residual,
                    "accurate": residual <= 1e-12,
                    "threads": threads,
                }
            )

    game = random_game(100, seed=0)
    mu100 = np.full(100, 0.01)
    seconds, traj = best_time(lambda: nash_md(game, mu100, 0.1, steps=10_000), args.repeat)
    emit(
        {
            "benchmark": "nash_md",
            "n": 100,
            "steps": 10_000,
            "tau": 0.1,
            "seconds": round(seconds, 4),
            "target_seconds": 1.0,
            "threads": threads,
        }
    )

    def bandit():
        return [
            train_bandit(name, taus=(0.1, 0.5, 1.0), seeds=10, steps=18_000) for name in ("D1", "D2", "two")
        ]

    seconds, _ = best_time(bandit, 1)
    emit(
        {
            "benchmark": "psipo_bandit",
            "datasets": ["D1", "D2", "two"],
            "taus": [0.1, 0.5, 1.0],
            "seeds": 10,
            "steps": 18_000,
            "seconds": round(seconds, 3),
            "target_seconds": 60.0,
            "threads": threads,
        }
    )


if __name__ == "__main__":
    main()
