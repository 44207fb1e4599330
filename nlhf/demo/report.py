"""What ``nlhf demo`` concludes and writes: the two claims checked against their own intervals,
each policy against its exact class-level target, the learning curves and the report sections.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from nlhf.demo.config import DemoConfig


def evaluate_claims(result: Any, confidence: float, seed: int = 0) -> dict[str, Any]:
    """The two claims, each checked against ITS OWN interval, from a tournament under the class oracle.

    (i) Nash-MD beats the reference: the mean oracle probability P(Nash-MD > reference) on
    independent pairs with its prompt-clustered t interval (the tournament's ``cluster_t``),
    which must lie above 1/2; beside it, the plug-in class-level win rate pi_N^T P* pi_ref
    with its bootstrap interval (the same estimand, less noise) and, for comparison, the
    width the binomial interval on the effective number of comparisons would have had.
    (ii) Nash-MD is less exploitable than RLHF: the PAIRED difference of their exact
    class-level exploitabilities, with a percentile bootstrap over prompts that resamples
    both policies' samples together (:func:`nlhf.eval.paired.exploitability_difference`),
    which must lie below 0. Two overlapping intervals decide nothing; the difference's does.
    """
    from nlhf.eval.intervals import effective_comparisons, wilson_interval
    from nlhf.eval.paired import exploitability_difference

    names = list(result.names)
    n, r = names.index("Nash-MD"), names.index("reference")

    def num(x: Any) -> float | None:
        x = float(x)
        return x if math.isfinite(x) else None

    win, low, high = num(result.win_rate[n][r]), num(result.win_low[n][r]), num(result.win_high[n][r])
    values = result.pair_probs[n, r].reshape(len(result.prompts), result.samples_per_prompt)
    n_eff = effective_comparisons(values)
    binomial = wilson_interval(float(values.mean()) * n_eff, n_eff, confidence)
    c1 = {"win_rate": win, "low": low, "high": high, "interval": result.interval,
          "se": num(result.win_se[n][r]) if result.win_se is not None else None,
          "binomial_interval": [binomial[0], binomial[1]],
          "holds": bool(low is not None and low > 0.5)}  # fmt: skip
    if result.class_win_rate is not None:
        c1["class_level"] = {"win_rate": num(result.class_win_rate[n][r]), "low": num(result.class_win_low[n][r]),
                             "high": num(result.class_win_high[n][r])}  # fmt: skip
    diff = exploitability_difference(result, "Nash-MD", "RLHF", seed=seed)
    c2 = {"nash_md": diff["a"], "rlhf": diff["b"], "difference": diff["difference"], "low": num(diff["low"]),
          "high": num(diff["high"]), "resamples": diff["resamples"],
          "holds": bool(diff["high"] is not None and math.isfinite(diff["high"]) and diff["high"] < 0)}  # fmt: skip
    return {"confidence": confidence, "nash_vs_reference": c1, "exploitability": c2}


def _fmt_dist(dist: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in dist.items())


def claims_markdown(claims: dict[str, Any] | None, quick: bool) -> str:
    """The claims section of the report (a smoke run says it claims nothing)."""
    if claims is None:
        return ("**This is a smoke run (`--quick` or `claims: false`): every stage ran on a few prompts and "
                "steps; it makes no significance claim.**")  # fmt: skip
    c1, c2 = claims["nash_vs_reference"], claims["exploitability"]
    pct = f"{100 * claims['confidence']:g}%"
    label = {"cluster_t": "prompt-clustered t interval"}.get(c1["interval"], f"{c1['interval']} interval")
    line1 = (f"1. **Nash-MD beats the reference under the oracle on the held-out prompts, with a {pct} interval "
             f"above 0.5**: P(Nash-MD > reference) = {c1['win_rate']:.3f}, {pct} {label} [{c1['low']:.3f}, "
             f"{c1['high']:.3f}]. **{'HOLDS' if c1['holds'] else 'DOES NOT HOLD'}.**")  # fmt: skip
    b = c1["binomial_interval"]
    line1 += (
        f" (The binomial interval on the effective number of comparisons would be [{b[0]:.3f}, {b[1]:.3f}].)"
    )
    if c1.get("class_level") and c1["class_level"]["low"] is not None:
        cl = c1["class_level"]
        line1 += (f" Plug-in class-level win rate pi_Nash-MD^T P* pi_reference = {cl['win_rate']:.3f}, bootstrap "
                  f"[{cl['low']:.3f}, {cl['high']:.3f}].")  # fmt: skip
    interval = (
        ""
        if c2["low"] is None
        else f", paired bootstrap {pct} interval [{c2['low']:+.3f}, {c2['high']:+.3f}]"
    )
    line2 = (f"2. **On the cyclic environment Nash-MD is less exploitable than RLHF** (the paired difference's "
             f"interval below 0): exploitability (exact, class level) Nash-MD {c2['nash_md']:.3f} vs RLHF "
             f"{c2['rlhf']:.3f}, difference {c2['difference']:+.3f}{interval}. "
             f"**{'HOLDS' if c2['holds'] else 'DOES NOT HOLD'}.**")  # fmt: skip
    return "\n".join([line1, line2])


def class_targets(env: Any, mu: Any, cfg: DemoConfig) -> dict[str, Any]:
    """Each trained policy's exact class-level target under the oracle, at the reference's class mix ``mu``.

    * Nash-MD: the stationary point of the expected Nash-MD-PG update with mixture
      coefficient beta (:func:`nlhf.lab.pg_stationary_point`; pi*_tau when beta = 0);
    * RLHF: mu exp(r / tau) / Z with r the Bradley-Terry reward a reward model converges to
      on mu's pairs (:func:`nlhf.lab.sampling_dependence.fit_bradley_terry`);
    * IPO: the PsiPO optimum with Psi = identity on pairs from mu,
      mu exp(P* mu / tau) / Z (:func:`nlhf.lab.psipo.psipo_optimum`);
    * reference: mu itself.
    Class-level KL is a lower bound on the sequence-level KL the trainers penalise, so these
    are the targets of the class-level game, not of the token-level problem.
    """
    import numpy as np

    from nlhf.lab import pg_stationary_point
    from nlhf.lab.psipo import psipo_optimum, rlhf_optimum
    from nlhf.lab.sampling_dependence import fit_bradley_terry

    mu = np.asarray(mu, dtype=np.float64)
    reward = fit_bradley_terry(env.game, mu)
    return {
        "reference": mu,
        "Nash-MD": pg_stationary_point(env.game, mu, cfg.tau, cfg.mixture_coef),
        "RLHF": rlhf_optimum(reward, mu, cfg.rlhf_tau),
        "IPO": psipo_optimum(env.game, mu, mu, cfg.ipo_tau, psi="identity"),
    }


def targets_markdown(env: Any, targets: dict[str, Any], result: Any) -> str:
    """Per policy: its class mix on the held-out prompts, its exact class-level target, TV distance between them,
    and both exploitabilities."""
    import numpy as np

    from nlhf.lab import exploitability

    head = "| policy | target | class mix (held-out samples) | target class mix | TV to target | exploitability | target's exploitability |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    kinds = {"reference": "mu", "Nash-MD": "Nash-MD-PG stationary point", "RLHF": "RLHF optimum (BT reward on mu's pairs)",
             "IPO": "IPO optimum (pairs from mu)"}  # fmt: skip
    for i, name in enumerate(result.names):
        if name not in targets or result.class_distribution is None:
            continue
        pi, t = result.class_distribution[i], np.asarray(targets[name])
        fmt = lambda v: "(" + ", ".join(f"{x:.2f}" for x in v) + ")"  # noqa: E731
        lines.append(f"| {name} | {kinds[name]} | {fmt(pi)} | {fmt(t)} | {0.5 * float(np.abs(pi - t).sum()):.3f} | "
                     f"{exploitability(env.game, pi):.3f} | {exploitability(env.game, t):.3f} |")  # fmt: skip
    return "Classes: " + ", ".join(env.classes) + ".\n\n" + "\n".join(lines)


def plot_learning_curves(runs: dict[str, Path], path: Path) -> Path | None:
    """One row per training run, one panel per metric (loss, win rate / reward / accuracy, KL) vs step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wanted = {
        "preference model": ("loss", "accuracy"),
        "reward model": ("loss", "accuracy"),
        "Nash-MD": ("loss", "win_rate", "kl_k3"),
        "RLHF": ("loss", "reward", "kl_k3"),
        "IPO": ("loss", "log_ratio_margin", "accuracy"),
    }
    rows = []
    for name, run in runs.items():
        f = run / "metrics.jsonl"
        if not f.is_file():
            continue
        recs = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
        recs = [r for r in recs if r.get("split") == "train"]
        if recs:
            rows.append((name, recs, wanted.get(name, ("loss",))))
    if not rows:
        return None
    cols = max(len(w) for _, _, w in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(3.6 * cols, 2.4 * len(rows)), squeeze=False)
    for i, (name, recs, keys) in enumerate(rows):
        for j in range(cols):
            ax = axes[i][j]
            if j >= len(keys):
                ax.axis("off")
                continue
            pts = [(r["step"], r[keys[j]]) for r in recs if keys[j] in r]
            if pts:
                ax.plot(*zip(*pts), marker=".", lw=1)
            ax.set_title(f"{name}: {keys[j]}", fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def report_sections(cfg: DemoConfig, s: dict[str, Any], stages: list[dict[str, Any]],
                    claims: dict[str, Any] | None) -> list[tuple[str, str]]:  # fmt: skip
    """The demo's report sections (markdown), before the evaluator's tournament table."""
    rows = [
        f"| reference samples (training prompts, stage 2) | {_fmt_dist(s['reference']['class_distribution'])} |"
    ]
    for p in s["tournament"]["policies"]:
        if p.get("class_distribution"):
            rows.append(
                f"| {p['name']} (held-out tournament samples) | {_fmt_dist(p['class_distribution'])} |"
            )
    j = s["judges"]
    peak = s.get("sgemm_peak_gflops")
    stage_rows = [f"| {r['stage']} | {r['wall_s']} | {r['cpu_s']} | {r['quiet_estimate_s']} | {r['load_avg']} | "
                  f"{r.get('gflop', '-')} | {r.get('gflops_per_s', '-')} | "
                  f"{format(r['gflops_per_s'] / peak, '.0%') if peak and 'gflops_per_s' in r else '-'} |"
                  for r in stages]  # fmt: skip
    total = sum(r["wall_s"] for r in stages)
    quiet = sum(r["quiet_estimate_s"] for r in stages)
    flops_note = (
        " GFLOP: matmul FLOPs of every linear layer, forward and backward (nlhf.models.flops; attention scores "
        "and element-wise work not counted); GFLOP/s over the quiet-machine time"
        + (f", against the float32 sgemm peak of {peak:g} GFLOP/s measured at the start of this run "
           f"(1024 x 1024 matmul, {s['threads']} threads)." if peak else ".")
    )  # fmt: skip
    analysis = s["class_level_analysis"]
    if "cyclic" in analysis:
        cyc, bt = analysis["cyclic"], analysis["bradley_terry_control"]
        lines = [f"Reward a Bradley-Terry model converges to on mu's pairs: "
                 f"{', '.join(f'{c} {r:+.2f}' for c, r in zip(cyc['classes'], cyc['reward']))} "
                 f"(top class: {cyc['rlhf_top_class']}).", "",
                 "| environment | tau | pi*_tau exploitability | RLHF optimum exploitability | RLHF at pi*_tau's KL |",
                 "|---|---|---|---|---|"]  # fmt: skip
        for name, a in (("cyclic", cyc), ("Bradley-Terry control", bt)):
            for row in a["by_tau"]:
                same = row["rlhf_same_kl_as_nash_tau"]
                lines.append(f"| {name} | {row['tau']:g} | {row['nash_tau']['exploitability']:.3f} | "
                             f"{row['rlhf']['exploitability']:.3f} | "
                             f"{'-' if same is None else format(same['exploitability'], '.3f')} |")  # fmt: skip
        analysis_md = "\n".join(lines)
    else:
        analysis_md = analysis.get("note", "")
    pairs = s["pairs"]
    return [
        ("Claims", claims_markdown(claims, not cfg.claims)),
        (
            "Setup",
            f"Policy base model `{cfg.model}` ({s['model']['parameters'] / 1e6:.1f}M parameters), LoRA r = "
            f"{cfg.lora_r} on {f'the last {cfg.lora_last_layers}' if cfg.lora_last_layers else 'all'} blocks; oracle: the cyclic rater "
            f"population (cycle {s['environment']['condorcet_cycles']}); responses cut at "
            f"{cfg.max_new_tokens} new tokens everywhere; tournament on {cfg.n_heldout_prompts or 48} held-out "
            f"prompts never used in training. Nash-MD-PG: tau {cfg.tau}, mixture_coef {cfg.mixture_coef}, "
            f"{cfg.nash_steps} steps x {cfg.nash_batch_size} prompts; RLHF ({cfg.rlhf_algorithm}): tau "
            f"{cfg.rlhf_tau}, {cfg.rlhf_steps} steps x {cfg.rlhf_batch_size} prompts x {cfg.rlhf_group_size}; "
            f"IPO: tau {cfg.ipo_tau}, {cfg.ipo_epochs:g} epochs on {cfg.ipo_pairs or 'all'} pairs; lr {cfg.policy_lr:g}. Full config: "
            "`config.yaml`.",
        ),  # fmt: skip
        (
            "Stage timings",
            "| stage | wall s | cpu s | quiet-machine estimate s | load avg | GFLOP | GFLOP/s | of sgemm peak |\n"
            "|---|---|---|---|---|---|---|---|\n"
            + "\n".join(stage_rows)
            + f"\n\nTotal {total:.0f} s wall; quiet-machine estimate "
            f"{quiet:.0f} s (cpu time / {s['threads']} threads, capped by the wall time)." + flops_note,
        ),
        ("Class distributions", "| policy | class distribution |\n|---|---|\n" + "\n".join(rows)),
        (
            "Labelled pairs and judges",
            f"{pairs['train']} training + {pairs['eval']} held-out pairs (split by "
            f"prompt), each labelled by {pairs['raters_per_pair']} Bernoulli(P*) raters (soft label = their mean); "
            f"dropped {pairs['dropped']}.\n\n| judge | accuracy (held-out slice) | log-loss | ECE | sign agreement "
            f"with P* | mean abs error vs P* |\n|---|---|---|---|---|---|\n"
            + "\n".join(
                f"| {n.replace('_', ' ')} | {j[n]['accuracy']:.3f} | {j[n]['log_loss']:.3f} | {j[n]['ece']:.3f} "
                f"| {j[n]['sign_agreement_vs_p_star']:.3f} | {j[n]['mean_abs_error_vs_p_star']:.3f} |"
                for n in ("preference_model", "reward_model")
            )
            + f"\n\nThe oracle P* itself scores {j['oracle_accuracy_on_labels']:.3f} on these sampled labels, "
            "counted the same way (1/2 where P* = 1/2): the ceiling, since labels are coin flips.",
        ),  # fmt: skip
        (
            "Class-level analysis at the reference's class mix (exact, nlhf.envs.environment_summary)",
            analysis_md,
        ),
    ]


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if hasattr(value, "tolist"):
        return _json_safe(value.tolist())
    if isinstance(value, Path):
        return str(value)
    return value
