"""Where the demo's learned judges lead their trainers, read at the class level (issue 14).

A trainer can at best reach the optimum of the objective it is given, and the objective is
the learned judge, not P*. This section reads the demo's preference model and reward model
on the held-out PAIR slice (training prompts kept out of judge training; never the tournament's
held-out prompts) at the class level, exactly as the sampling-distribution section reads its
judges (:func:`nlhf.demo.sampling_dependence.class_readings`: every ordered pair of two
reference responses of one prompt):

* the preference model's class matrix P_hat (mean P(y > y') over the pairs of each class pair,
  symmetrised), next to P*, and its majority 3-cycles (P* has one; a transitive P_hat has none);
* its Nash-MD-PG target: the stationary point of the expected Nash-MD-PG update on P_hat at the
  demo's tau and mixture_coef (:func:`nlhf.lab.pg_stationary_point`), the same map the report's
  oracle target applies to P*;
* the reward model's class rewards (mean reward of a class's responses) and its RLHF target
  mu exp(r / tau) / Z (:func:`nlhf.lab.psipo.rlhf_optimum`);
* the exploitability UNDER P* of both judge-induced targets, with 95% percentile intervals from a
  bootstrap over the slice's prompts (the same resampled prompts for both judges), and their
  paired difference (Nash-MD's target minus RLHF's).

If the preference model's P_hat is transitive, its Nash-MD target is nearly pure and about as
exploitable as the RLHF target: claim (ii) cannot hold however long Nash-MD trains on that
judge.

The class-level reading assumes a judge scores every response of a class alike. It does not: a
reward model's RLHF optimum pi(y) = mu(y) exp(r(y) / tau) / Z puts a class's mass on that class's
best-scored responses (a log-sum-exp of its rewards, not their mean), and a policy moves within
classes as freely as between them. So the same judges are also read at the RESPONSE level, on the
empirical support of each slice prompt's S reference responses (mu uniform on them): the RLHF
optimum softmax(r / tau) over the S responses, and the Nash-MD-PG stationary point on the S x S
matrix of the preference model's P(y_i > y_j) (symmetrised), each summed over the responses of a
class and averaged over the prompts (:func:`response_nash_mixes`, :func:`response_rlhf_mixes`), with the same exploitability
under P* and bootstrap. These are the optima of the trainers' objectives restricted to what mu
drew; the class-level ones are what the judges would give if class were all they saw.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nlhf.demo.config import DemoConfig
from nlhf.demo.sampling_dependence import answers, class_readings


def _prompt_slices(readings: dict[str, np.ndarray]) -> list[slice]:
    """The flat response indices of each prompt g (responses are prompt-major in ``readings``)."""
    group = readings["group"]  # (N,)
    starts = np.searchsorted(group, np.arange((int(group.max()) + 2) if len(group) else 1))
    return [slice(int(lo), int(hi)) for lo, hi in zip(starts[:-1], starts[1:])]


def response_nash_mixes(readings: dict[str, np.ndarray], K: int, tau: float, beta: float) -> np.ndarray:
    """Per prompt g, the class mix (G, K) of the Nash-MD-PG stationary point at (``tau``, ``beta``) on the
    symmetrised S_g x S_g matrix of the judge's P(y_i > y_j) over g's responses, mu uniform on them (module
    docstring). ``readings``: :func:`nlhf.demo.sampling_dependence.class_readings`'s output."""
    from nlhf.lab import pg_stationary_point

    cls, first, second, prob = (readings[k] for k in ("classes", "pair_first", "pair_second", "pair_prob"))
    pair_group = readings["group"][first]  # (pairs,)
    slices = _prompt_slices(readings)
    nash = np.zeros((len(slices), K))
    for g, sl in enumerate(slices):
        n = sl.stop - sl.start
        M = np.full((n, n), 0.5)  # (S_g, S_g) P(y_i > y_j)
        sel = pair_group == g
        M[first[sel] - sl.start, second[sel] - sl.start] = prob[sel]
        M = 0.5 * (M + 1.0 - M.T)  # skew-symmetric about 1/2, as a preference game must be
        pi = pg_stationary_point(M, np.full(n, 1.0 / n), tau, beta)  # (S_g,)
        nash[g] = np.bincount(cls[sl], weights=pi, minlength=K)
    return nash


def response_rlhf_mixes(readings: dict[str, np.ndarray], K: int, rlhf_tau: float) -> np.ndarray:
    """Per prompt g, the class mix (G, K) of the RLHF optimum softmax(r / ``rlhf_tau``) over g's responses (mu
    uniform on them); ``readings`` of a reward judge (with ``rewards``)."""
    cls, rewards = readings["classes"], readings["rewards"]
    slices = _prompt_slices(readings)
    rlhf = np.zeros((len(slices), K))
    for g, sl in enumerate(slices):
        z = rewards[sl] / rlhf_tau
        w = np.exp(z - z.max())  # (S_g,) the RLHF optimum on the support, unnormalised
        rlhf[g] = np.bincount(cls[sl], weights=w / w.sum(), minlength=K)
    return rlhf


def judge_targets(cfg: DemoConfig, env: Any, records: Sequence[dict], mu: np.ndarray, pm_judge: Any,
                  rm_judge: Any) -> dict[str, Any]:  # fmt: skip
    """Read ``pm_judge`` (any judge with ``prob``) and ``rm_judge`` (a reward model's judge, with ``reward``) at the
    class level on the reference responses ``records`` (``{"id", "prompt", "response", "class"}``: the judges'
    held-out pair slice); ``mu`` (K,) the reference's class mix. The module docstring lists what is returned."""
    from nlhf.envs.oracles import majority_cycles
    from nlhf.lab import exploitability, pg_stationary_point
    from nlhf.lab.games import PreferenceGame

    pm = class_readings(pm_judge, env, records)
    rm = class_readings(rm_judge, env, records)
    if "r_sum" not in rm:
        raise ValueError("judge_targets: rm_judge has no reward() (a reward model's judge is needed)")
    G = pm["count"].shape[0]
    K = len(env.classes)
    resp_nash = response_nash_mixes(pm, K, cfg.tau, cfg.mixture_coef)  # (G, K)
    resp_rlhf = response_rlhf_mixes(rm, K, cfg.rlhf_tau)  # (G, K)

    def targets(idx: np.ndarray) -> dict[str, Any]:
        a_pm, a_rm = answers(pm, idx, mu, cfg.tau, cfg.rlhf_tau), answers(rm, idx, mu, cfg.tau, cfg.rlhf_tau)
        nash = pg_stationary_point(a_pm["P"], mu, cfg.tau, cfg.mixture_coef)
        r_nash, r_rlhf = resp_nash[idx].mean(0), resp_rlhf[idx].mean(0)  # (K,) each
        return {"P": a_pm["P"], "nash_md_target": nash, "reward": a_rm["reward"], "rlhf_target": a_rm["rlhf"],
                "nash_md_exploitability": exploitability(env.game, nash),
                "rlhf_exploitability": exploitability(env.game, a_rm["rlhf"]),
                "nash_md_response_target": r_nash, "rlhf_response_target": r_rlhf,
                "nash_md_response_exploitability": exploitability(env.game, r_nash),
                "rlhf_response_exploitability": exploitability(env.game, r_rlhf)}  # fmt: skip

    point = targets(np.arange(G))
    rng = np.random.default_rng([cfg.seed, 14, 2])
    draws = [targets(rng.integers(0, G, G)) for _ in range(cfg.bootstrap)]
    alpha = 100 * (1 - cfg.confidence) / 2

    def interval(values: Sequence[float]) -> list[float]:
        return [float(np.percentile(values, alpha)), float(np.percentile(values, 100 - alpha))]

    nash_e = [d["nash_md_exploitability"] for d in draws]
    rlhf_e = [d["rlhf_exploitability"] for d in draws]
    nash_r = [d["nash_md_response_exploitability"] for d in draws]
    rlhf_r = [d["rlhf_response_exploitability"] for d in draws]
    cycles = majority_cycles(PreferenceGame(point["P"], env.classes))
    return {
        "prompts": G,
        "pairs": int(pm["count"].sum()),
        "pair_counts": pm["count"].sum(0).astype(int).tolist(),  # (K, K) ordered pairs per class pair
        "P_hat": point["P"].round(4).tolist(),
        "P_star": env.P.round(4).tolist(),
        "cycles": [[env.classes[i] for i in c] for c in cycles],
        "nash_md_target": point["nash_md_target"].round(4).tolist(),
        "class_rewards": np.asarray(point["reward"]).round(4).tolist(),
        "rlhf_target": point["rlhf_target"].round(4).tolist(),
        "nash_md_exploitability": float(point["nash_md_exploitability"]),
        "nash_md_exploitability_interval": interval(nash_e),
        "rlhf_exploitability": float(point["rlhf_exploitability"]),
        "rlhf_exploitability_interval": interval(rlhf_e),
        "difference": float(point["nash_md_exploitability"] - point["rlhf_exploitability"]),
        "difference_interval": interval([n - r for n, r in zip(nash_e, rlhf_e)]),
        "response_level": {
            "nash_md_target": point["nash_md_response_target"].round(4).tolist(),
            "rlhf_target": point["rlhf_response_target"].round(4).tolist(),
            "nash_md_exploitability": float(point["nash_md_response_exploitability"]),
            "nash_md_exploitability_interval": interval(nash_r),
            "rlhf_exploitability": float(point["rlhf_response_exploitability"]),
            "rlhf_exploitability_interval": interval(rlhf_r),
            "difference": float(
                point["nash_md_response_exploitability"] - point["rlhf_response_exploitability"]
            ),
            "difference_interval": interval([n - r for n, r in zip(nash_r, rlhf_r)]),
        },
    }


def judge_targets_of_run(cfg: DemoConfig, run: Path, env: Any, heldout_ids: set[str], mu: np.ndarray) -> dict:
    """:func:`judge_targets` for a demo run directory: ``run/pm``, ``run/rm`` on the reference responses
    (``run/pairs/reference_samples.jsonl``) of the prompts ``heldout_ids``."""
    from nlhf.judges import load_judge

    lines = (run / "pairs" / "reference_samples.jsonl").read_text().splitlines()
    records = [r for r in map(json.loads, lines) if r["id"] in heldout_ids]
    pm, rm = (load_judge(str(run / k), cfg.eval_batch_size) for k in ("pm", "rm"))
    return judge_targets(cfg, env, records, mu, pm, rm)


def judge_targets_markdown(s: dict[str, Any], classes: Sequence[str], confidence: float) -> str:
    """The section's text: P_hat beside P*, the judge-induced targets and their exploitability under P*."""
    fmt = lambda v: "(" + ", ".join(f"{x:.2f}" for x in v) + ")"  # noqa: E731
    pct = f"{confidence:.0%}"
    head = "| row beats column | " + " | ".join(classes) + " |"
    rows = [head, "|---" * (len(classes) + 1) + "|"]
    for i, c in enumerate(classes):
        cells = [f"{s['P_hat'][i][j]:.2f} ({s['P_star'][i][j]:.2f})" for j in range(len(classes))]
        rows.append(f"| {c} | " + " | ".join(cells) + " |")
    cyc = ", ".join(" > ".join(c) for c in s["cycles"]) or "none (transitive majority)"
    lo, hi = s["difference_interval"]
    return "\n".join([
        f"The preference model's class matrix P_hat on the judges' held-out pair slice ({s['prompts']} training "
        f"prompts kept out of judge training, {s['pairs']} ordered pairs of reference responses), with P* in "
        f"brackets; majority cycles of P_hat: {cyc}.", "", *rows, "",
        "| judge | what its trainer is pulled to (class level) | target class mix | exploitability under P* "
        f"({pct} prompt bootstrap) |", "|---|---|---|---|",
        f"| preference model | Nash-MD-PG stationary point on P_hat | {fmt(s['nash_md_target'])} | "
        f"{s['nash_md_exploitability']:.3f} [{s['nash_md_exploitability_interval'][0]:.3f}, "
        f"{s['nash_md_exploitability_interval'][1]:.3f}] |",
        f"| reward model (class rewards {fmt(s['class_rewards'])}) | RLHF optimum mu exp(r / tau) / Z | "
        f"{fmt(s['rlhf_target'])} | {s['rlhf_exploitability']:.3f} [{s['rlhf_exploitability_interval'][0]:.3f}, "
        f"{s['rlhf_exploitability_interval'][1]:.3f}] |", "",
        f"Difference (Nash-MD's target minus RLHF's): {s['difference']:+.3f}, paired {pct} interval "
        f"[{lo:+.3f}, {hi:+.3f}]. A trainer at best reaches its judge's target: claim (ii) needs the first row "
        "below the second.", *response_level_markdown(s.get("response_level"), pct, fmt),
    ])  # fmt: skip


def response_level_markdown(r: dict[str, Any] | None, pct: str, fmt: Any) -> list[str]:
    """The response-level rows (module docstring); none for a summary written before they existed."""
    if not r:
        return []
    ci = lambda k: f"{r[k]:.3f} [{r[k + '_interval'][0]:.3f}, {r[k + '_interval'][1]:.3f}]"  # noqa: E731
    lo, hi = r["difference_interval"]
    return [
        "", "The same judges read at the response level: each trainer's optimum over each slice prompt's own "
        "reference responses (mu uniform on them), its class mix averaged over the prompts. A judge that scores "
        "responses of one class differently pulls its trainer to the best-scored responses of every class.", "",
        f"| judge | response-level target | target class mix | exploitability under P* ({pct} prompt bootstrap) |",
        "|---|---|---|---|",
        f"| preference model | Nash-MD-PG stationary point on each prompt's matrix of P_hat | "
        f"{fmt(r['nash_md_target'])} | {ci('nash_md_exploitability')} |",
        f"| reward model | RLHF optimum softmax(r / tau) over each prompt's responses | {fmt(r['rlhf_target'])} | "
        f"{ci('rlhf_exploitability')} |", "",
        f"Difference at the response level: {r['difference']:+.3f}, paired {pct} interval [{lo:+.3f}, {hi:+.3f}].",
    ]  # fmt: skip
