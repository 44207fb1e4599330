"""``nlhf demo``: one command that shows what the library does and writes a report.

``nlhf demo`` runs the NLHF pipeline end to end on a real language model under a known
truth (:mod:`nlhf.pipeline`: reference samples, oracle labels, preference and reward
models, Nash-MD-PG / RLHF / IPO with LoRA, a tournament under the oracle). ``nlhf demo
--lab`` runs the exact lab showcase (:func:`run_lab_showcase`): equilibria of the lab's
games, Nash-MD against multiplicative weights and mirror descent on rock-paper-scissors,
and the PsiPO IPO/DPO bandit reproduction; the pipeline adds it as a section with
``--set lab=true``. Nothing heavy is imported at module import time.
"""

from __future__ import annotations

import json
import time
from pathlib import Path


def _stage(index: int, total: int, name: str):
    """Context-free stage timer: returns a function printing '[i/n] name: message (s)'."""
    start = time.perf_counter()

    def done(message: str) -> None:
        print(f"[{index}/{total}] {name}: {message} ({time.perf_counter() - start:.1f} s)", flush=True)

    return done


def _fmt(probs, digits: int = 4) -> str:
    return "(" + ", ".join(f"{p:.{digits}f}" for p in probs) + ")"


def run_lab_showcase(out_dir, quick: bool = False, metadata: dict | None = None) -> dict:
    """Run the lab showcase into ``out_dir``; return the results (also in results.json).

    Stages: (1) equilibria of rock-paper-scissors, the Condorcet raters, the dice, a
    Bradley-Terry game and a random game (equilibria.png); (2) Nash-MD vs regularised
    mirror descent vs multiplicative weights on rock-paper-scissors (dynamics_rps.png);
    (3) the PsiPO Sec. 5.4 bandits D1, D2 and two actions, DPO and IPO (bandit_*.png).
    ``quick`` shortens stages 2-3 (3000 bandit steps and 4 seeds instead of 18000 and 10).
    Writes results.json (with ``metadata`` merged in) and report.md into ``out_dir``.
    """
    from nlhf.lab.plots import plot_dynamics, plot_equilibria
    from nlhf.lab.showcase import bandit_showcase, compare_dynamics, equilibria_showcase

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tau = 0.1
    dyn_steps = 1000 if quick else 3000
    bandit_steps, bandit_seeds = (3000, 4) if quick else (18_000, 10)
    total = 3
    results: dict = {**(metadata or {}), "quick": quick, "tau": tau, "files": {}}

    done = _stage(1, total, "equilibria")
    equilibria = equilibria_showcase(tau)
    entries = [
        {
            "title": e["title"],
            "names": e["names"],
            "policies": {
                "Nash (tau=0)": e["nash"],
                f"pi*_tau (tau={tau:g})": e["pi_tau"],
                **({"RLHF optimum": e["rlhf_optimum"]} if "rlhf_optimum" in e else {}),
            },
        }
        for e in equilibria
    ]
    results["files"]["equilibria"] = str(plot_equilibria(entries, out / "equilibria.png").name)
    results["equilibria"] = equilibria
    worst = max(e["pi_tau_residual"] for e in equilibria)
    done(f"{len(equilibria)} games solved, worst fixed-point residual {worst:.1e}")

    done = _stage(2, total, "dynamics")
    comparison = compare_dynamics(tau=tau, steps=dyn_steps)
    results["files"]["dynamics"] = str(plot_dynamics(comparison, out / "dynamics_rps.png").name)
    results["dynamics"] = {
        "game": "rps",
        "mu": comparison["mu"].tolist(),
        "tau": tau,
        "steps": dyn_steps,
        "pi_tau": comparison["pi_tau"].tolist(),
        "nash": comparison["nash"].tolist(),
        "runs": comparison["summary"],
    }
    final_md = comparison["runs"][0]["kl"][-1]
    done(f"Nash-MD KL(pi*_tau, pi_T) = {final_md:.1e} after {dyn_steps} steps")

    done = _stage(3, total, "ipo-bandit")
    bandit = bandit_showcase(out, taus=(0.1, 0.5, 1.0), seeds=bandit_seeds, steps=bandit_steps)
    for name, summary in bandit.items():
        results["files"][f"bandit_{name}"] = Path(summary.pop("plot")).name
    results["bandit"] = bandit
    d1 = bandit["D1"]["methods"]
    done(
        f"D1 after {bandit_steps} steps: DPO pi(a) = {d1['dpo']['0.1']['mean'][0]:.4f} (tau 0.1), "
        f"IPO pi(a) = {d1['ipo']['0.1']['mean'][0]:.4f} vs closed form {d1['ipo']['0.1']['closed_form'][0]:.4f}"
    )

    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "report.md").write_text(_report(results))
    return results


def _report(results: dict) -> str:
    """A short markdown report of :func:`run_lab_showcase`'s results."""
    tau = results["tau"]
    lines = [
        "# nlhf demo: the exact theory lab",
        "",
        "Everything below is computed exactly (float64), no neural network involved. "
        "THEORY.md has the mathematics.",
        "",
        f"## 1. Equilibria (tau = {tau:g}, mu uniform)",
        "",
        "| game | Nash (tau = 0) | exploitability | pi*_tau | residual |",
        "|---|---|---|---|---|",
    ]
    for e in results["equilibria"]:
        lines.append(
            f"| {e['title']} | {_fmt(e['nash'], 3)} | {e['nash_exploitability']:.1e} | "
            f"{_fmt(e['pi_tau'], 3)} | {e['pi_tau_residual']:.1e} |"
        )
    bt = next(e for e in results["equilibria"] if "rlhf_optimum" in e)
    lines += [
        "",
        f"On the Bradley-Terry game the regularised Nash equilibrium {_fmt(bt['pi_tau'], 3)} is not the "
        f"RLHF optimum mu exp(r/tau) {_fmt(bt['rlhf_optimum'], 3)} (total variation "
        f"{bt['tv_pi_tau_vs_rlhf']:.2f}).",
        "",
        f"![equilibria]({results['files']['equilibria']})",
        "",
        "## 2. Nash-MD, mirror descent and multiplicative weights on rock-paper-scissors",
        "",
        f"mu = {_fmt(results['dynamics']['mu'], 2)}, tau = {tau:g}, pi*_tau = "
        f"{_fmt(results['dynamics']['pi_tau'])}, {results['dynamics']['steps']} steps.",
        "",
        "| run | target | KL at t=10 | t=100 | t=1000 | final |",
        "|---|---|---|---|---|---|",
    ]
    steps = results["dynamics"]["steps"]
    for label, r in results["dynamics"]["runs"].items():
        k = r["kl_at_steps"]
        cells = " | ".join(f"{k[str(t)]:.1e}" if str(t) in k else "-" for t in (10, 100, 1000))
        lines.append(f"| {label} | {r['target']} | {cells} | {k[str(steps)]:.1e} |")
    lines += [
        "",
        "Nash-MD's last iterate converges to pi*_tau; with a constant step it stops at the biased "
        "point with mixture coefficient eta*tau. Regularised mirror descent against pi_t converges "
        "(fast) for a small step but not for a large one, where Nash-MD stays stable. "
        "Multiplicative weights (tau = 0) spirals away from the uniform equilibrium; only its "
        "average converges.",
        "",
        f"![dynamics]({results['files']['dynamics']})",
        "",
        "## 3. IPO vs DPO on the PsiPO bandits (Sec. 5.4)",
        "",
    ]
    for name, summary in results["bandit"].items():
        actions = summary["actions"]
        lines += [
            f"Dataset {name}: {len(summary['seeds'])} seeds x {summary['steps']} steps, final probabilities "
            f"of ({', '.join(actions)}), mean [{summary['interval']}]:",
            "",
            "| method | tau | mean | 95% interval | IPO closed form |",
            "|---|---|---|---|---|",
        ]
        for method, per_tau in summary["methods"].items():
            for t, e in per_tau.items():
                interval = ", ".join(f"[{lo:.3f}, {hi:.3f}]" for lo, hi in zip(e["ci95_low"], e["ci95_high"]))
                closed = _fmt(e["closed_form"]) if "closed_form" in e else "-"
                lines.append(f"| {method.upper()} | {t} | {_fmt(e['mean'])} | {interval} | {closed} |")
        lines += ["", f"![bandit {name}]({results['files'][f'bandit_{name}']})", ""]
    lines += [
        "DPO drives the dispreferred actions to probability 0 on D1 and on two actions whatever "
        "tau is (the KL term stops regularising with deterministic preferences); IPO stays at its "
        "regularised closed form.",
        "",
    ]
    return "\n".join(lines)


def cmd_demo(args) -> int:
    """``nlhf demo``: the NLHF pipeline end to end (:func:`nlhf.pipeline.run_demo`), or ``--lab`` only."""
    import os

    os.environ["HF_HUB_OFFLINE"] = "1"  # the demo never contacts a model hub
    out = Path(args.out or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}")
    if args.lab:
        run_lab_showcase(out, quick=args.quick, metadata={"command": "demo --lab", "device": args.device})
        print(f"report: {out / 'report.md'}")
        return 0
    from nlhf.pipeline import load_demo_config, run_demo

    cfg = load_demo_config(
        args.config, args.overrides or (), quick=args.quick, model=args.model, device=args.device
    )
    summary = run_demo(cfg, out)
    files = summary.get("files", {})
    print(f"report: {out / 'report.md'}" + (f" and {files['html']}" if "html" in files else ""))
    return 0


def register(subparsers) -> None:
    """Add ``nlhf demo`` to the top-level ``subparsers``."""
    import argparse

    p = subparsers.add_parser(
        "demo",
        help="NLHF end to end on SmolLM2-135M-Instruct under a known truth, with a report (start here)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Sample the reference model, label pairs with a cyclic rater-population oracle, train a\n"
        "preference model and a reward model, fine-tune the policy (LoRA) with Nash-MD-PG, RLHF and IPO,\n"
        "and run a tournament under the oracle on held-out prompts. Writes report.md / report.html,\n"
        "the labelled pairs, the judges, the policies and the resolved config into --out.\n\n"
        "Every budget knob is a key of nlhf.pipeline.DemoConfig (--set key=value, --config YAML).\n"
        "--quick is a smoke run of every stage (minutes) that makes no significance claim.\n"
        "--lab runs only the exact theory lab showcase (seconds, no model).",
        epilog="examples:\n  nlhf demo\n  nlhf demo --quick --out runs/demo-quick\n"
        "  nlhf demo --set nash_steps=60 --set tau=0.02\n  nlhf demo --device cuda --model PATH_OR_CACHED_HUB_NAME\n\n"
        "The demo runs offline (HF_HUB_OFFLINE=1): a hub name must already be in the local cache.",
    )
    p.add_argument("--out", default=None, help="run directory (default runs/demo-<timestamp>)")
    p.add_argument("--quick", action="store_true", help="a smoke run of every stage (no significance claim)")
    p.add_argument(
        "--device", default=None, choices=["cpu", "cuda", "auto"], help="where to run (default cpu)"
    )
    p.add_argument(
        "--model", default=None, help="policy base model: smollm2 (default), tiny, a path or hub name"
    )
    p.add_argument("--config", default=None, help="YAML file with DemoConfig keys")
    p.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE",
                   help="override a DemoConfig key (repeatable), e.g. --set nash_steps=60")  # fmt: skip
    p.add_argument("--lab", action="store_true", help="run only the exact lab showcase (no language model)")
    p.set_defaults(func=cmd_demo)
