"""``run_demo``: the six stages of ``nlhf demo`` in one straight line (model + environment, reference
samples + oracle labels, preference and reward models, the sampling-distribution section, Nash-MD / RLHF /
IPO, tournament + report), one function per stage below it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from nlhf.config import save_config, to_dict
from nlhf.demo.config import TINY, DemoConfig
from nlhf.demo.judge_targets import judge_targets_markdown, judge_targets_of_run
from nlhf.demo.report import (
    _fmt_dist,
    _json_safe,
    class_targets,
    evaluate_claims,
    plot_learning_curves,
    report_sections,
    targets_markdown,
)
from nlhf.demo.sampling_dependence import run_sampling_dependence, sampling_dependence_markdown
from nlhf.demo.stages import (
    StageClock,
    cap_pairs_per_prompt,
    fit_judge,
    judge_vs_oracle,
    label_pairs,
    load_policy_model,
    pick_prompts,
    sample_responses,
    split_pairs_by_prompt,
    tiny_encoder_dir,
    tournament_config,
    train_ipo,
    train_nash_md,
    train_rlhf,
)


def run_demo(cfg: DemoConfig, out: str | Path) -> dict[str, Any]:
    """Run the six stages into ``out``; returns the summary (also ``summary.json``); prints the report path.

    The run directory receives ``config.yaml``, ``pairs/`` (reference samples and labelled
    pairs), ``pm/``, ``rm/``, ``nu_A/``, ``nu_B/`` (the sampling-distribution section's pairs and
    judges), ``nash_md/``, ``rlhf/``, ``ipo/`` (the trainers' own run directories: config,
    metrics.jsonl, policy adapter), ``learning_curves.png``, ``report.md``, ``report.html``,
    ``tournament.md``, ``win_rates.png``, ``results.json`` (the tournament) and
    ``summary.json`` (everything else).
    """
    os.environ["HF_HUB_OFFLINE"] = "1"  # the demo never contacts a model hub
    import torch

    from nlhf.models.flops import sgemm_peak_gflops

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = Path(out)
    run.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run / "config.yaml")
    device = "cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu"
    clock = StageClock(6, torch.get_num_threads())
    summary: dict[str, Any] = {"config": to_dict(cfg), "device": device, "threads": torch.get_num_threads()}
    if device == "cpu":  # what the stages' GFLOP/s are compared with (nlhf.models.flops)
        summary["sgemm_peak_gflops"] = round(sgemm_peak_gflops(), 1)
    if not cfg.claims:
        print("quick/smoke run: every stage runs on a few prompts and steps; NO significance claim is made.")

    done = clock.start(1, "model + environment")
    ref_model, ref_tok, env, train_prompts, heldout_prompts, message = stage_environment(cfg, device, summary)
    done(message)
    done = clock.start(2, "reference samples + oracle labels")
    train_pairs, eval_pairs, mu_vec, message = stage_reference(cfg, run, env, ref_model, ref_tok, train_prompts,
                                                               summary)  # fmt: skip
    del ref_model  # the tournament's reference is loaded fresh
    done(message)
    done = clock.start(3, "preference model + reward model")
    judge_model, message = stage_judges(cfg, run, eval_pairs, summary)
    held_ids = {e.metadata["prompt_id"] for e in eval_pairs}
    if mu_vec.min() > 0:  # where the learned judges lead their trainers, at the class level
        jt = summary["judge_targets"] = judge_targets_of_run(cfg, run, env, held_ids, mu_vec)
        message += (f"; judge-induced targets' exploitability under P*: Nash-MD {jt['nash_md_exploitability']:.3f}, "
                    f"RLHF {jt['rlhf_exploitability']:.3f}")  # fmt: skip
    done(message)
    nu_section = None
    if cfg.nu_pairs > 0:  # reward models move with the sampling distribution, preference models do not
        done = clock.start(4, "reward vs preference model under two sampling distributions")
        train_ids = {p.metadata["id"] for p in train_prompts} - held_ids
        nu_section = summary["sampling_dependence"] = run_sampling_dependence(cfg, run, env, judge_model, train_ids,
                                                                              held_ids)  # fmt: skip
        done(f"RLHF top class {nu_section['rm_top_class']['rm_A']} (nu_A) vs {nu_section['rm_top_class']['rm_B']} "
             f"(nu_B); TV of the RLHF optima {nu_section['rm_tv']:.3f}, of the Nash equilibria "
             f"{nu_section['pm_tv']:.3f}")  # fmt: skip
    done = clock.start(5, "policies (Nash-MD, RLHF, IPO)")
    trained = stage_policies(cfg, run, train_prompts, summary)
    done(", ".join(f"{n}: {r.summary.get('steps')} steps" for n, r in trained.items()))
    done = clock.start(6, "tournament (oracle, held-out prompts) + report")
    stage_tournament_and_report(cfg, run, device, env, trained, heldout_prompts, mu_vec, nu_section, summary,
                                clock, done)  # fmt: skip
    return summary


def stage_environment(cfg: DemoConfig, device: str, summary: dict[str, Any]) -> tuple:
    """Stage 1: mu (the policy's base model), the cyclic oracle, the prompts. Returns (model, tokenizer, env,
    train prompts, held-out prompts, status line)."""
    import torch

    from nlhf.envs import default_rater_population

    torch.manual_seed(cfg.seed)
    ref_model, ref_tok = load_policy_model(cfg.model, seed=cfg.seed, device=device)
    env = default_rater_population()
    train_prompts = pick_prompts("train", cfg.n_train_prompts)
    heldout_prompts = pick_prompts("heldout", cfg.n_heldout_prompts)
    n_params = sum(p.numel() for p in ref_model.parameters())
    summary["environment"] = {"name": env.name, "classes": list(env.classes), "P": env.P.round(4).tolist(),
                              "condorcet_cycles": env.condorcet_cycles(), "raters": [
                                  {"name": r.name, "ranking": list(map(str, r.ranking)), "weight": r.weight}
                                  for r in env.raters]}  # fmt: skip
    summary["model"] = {"name": cfg.model, "parameters": n_params}
    message = (f"{cfg.model} ({n_params / 1e6:.1f}M parameters) on {device}; {env.name} with "
               f"{len(env.classes)} classes, cycle {env.condorcet_cycles()}; {len(train_prompts)} train / "
               f"{len(heldout_prompts)} held-out prompts")  # fmt: skip
    return ref_model, ref_tok, env, train_prompts, heldout_prompts, message


def stage_reference(cfg: DemoConfig, run: Path, env: Any, ref_model: Any, ref_tok: Any, train_prompts: list,
                    summary: dict[str, Any]) -> tuple:  # fmt: skip
    """Stage 2: mu's samples, their classes, oracle-labelled pairs split by prompt, the exact class-level
    analysis. Returns (train pairs, held-out pairs, mu's class mix (K,), status line)."""
    from nlhf.data import save_preferences
    from nlhf.envs import class_distribution, default_bradley_terry, environment_summary

    samples = sample_responses(ref_model, ref_tok, train_prompts, cfg.samples_per_prompt, cfg.max_new_tokens,
                               batch_rows=cfg.sample_batch_rows, seed=cfg.seed, desc="reference samples")  # fmt: skip
    (run / "pairs").mkdir(exist_ok=True)
    ids = [p.metadata["id"] for p, ys in zip(train_prompts, samples) for _ in ys]
    xs = [p.prompt for p, ys in zip(train_prompts, samples) for _ in ys]
    flat = [y for ys in samples for y in ys]
    classes = env.classify(xs, flat)  # (N,) class index of every reference response
    with open(run / "pairs" / "reference_samples.jsonl", "w", encoding="utf-8") as f:
        for i, x, y, c in zip(ids, xs, flat, classes):
            f.write(json.dumps({"id": i, "prompt": x, "response": y, "class": env.classes[c]}) + "\n")
    examples, dropped = label_pairs(env, train_prompts, samples, cfg.raters_per_pair, cfg.seed, cfg.pairing)
    train_pairs, eval_pairs = split_pairs_by_prompt(examples, cfg.pair_eval_fraction, cfg.seed)
    train_pairs = cap_pairs_per_prompt(train_pairs, cfg.judge_pairs_per_prompt, cfg.seed)
    save_preferences(train_pairs, run / "pairs" / "train.jsonl")
    save_preferences(eval_pairs, run / "pairs" / "eval.jsonl")
    mu_vec = class_distribution(classes, len(env.classes))  # (K,) unrounded: sums to 1
    mu = dict(zip(env.classes, mu_vec.round(4).tolist()))  # {class: share}, for the report
    analysis: dict[str, Any] = {}
    if mu_vec.min() > 0:
        control = default_bradley_terry()
        analysis["cyclic"] = environment_summary(env.game, mu_vec)
        analysis["bradley_terry_control"] = environment_summary(control.game, mu_vec, reward=control.scores)
    else:
        analysis["note"] = f"class-level analysis skipped: mu has an empty class ({_fmt_dist(mu)})"
    summary["reference"] = {"class_distribution": mu, "min_share": float(mu_vec.min()),
                            "covers_every_class_5pct": bool(mu_vec.min() >= 0.05), "n_responses": len(flat)}  # fmt: skip
    summary["pairs"] = {"train": len(train_pairs), "eval": len(eval_pairs), "dropped": dropped,
                        "raters_per_pair": cfg.raters_per_pair}  # fmt: skip
    summary["class_level_analysis"] = analysis
    message = (f"{len(flat)} responses, mu = ({_fmt_dist(mu)}); {len(train_pairs)} + {len(eval_pairs)} labelled "
               f"pairs (train + held-out slice), dropped {dropped}")  # fmt: skip
    return train_pairs, eval_pairs, mu_vec, message


def stage_judges(cfg: DemoConfig, run: Path, eval_pairs: list, summary: dict[str, Any]) -> tuple[str, str]:
    """Stage 3: the preference model and the reward model on the training slice, scored on the held-out slice
    and against P*. Returns (the judges' backbone name or path, status line)."""
    import numpy as np

    from nlhf.judges import load_judge

    judge_model = (
        str(tiny_encoder_dir(run / "tiny_encoder", cfg.seed)) if cfg.judge_model == TINY else cfg.judge_model
    )
    pm = fit_judge("pm", cfg, run, judge_model)
    rm = fit_judge("rm", cfg, run, judge_model)
    pm_judge = load_judge(str(run / "pm"), cfg.eval_batch_size)
    rm_judge = load_judge(str(run / "rm"), cfg.eval_batch_size)
    summary["judges"] = {
        name: {"accuracy": m["accuracy"], "log_loss": m["log_loss"], "ece": m["ece"], "n_eval": m["n_eval"],
               "n_train": m["n_train"], "steps": m["steps"], **judge_vs_oracle(j, eval_pairs)}
        for name, m, j in (("preference_model", pm, pm_judge), ("reward_model", rm, rm_judge))
    }  # fmt: skip
    # the ceiling: P* itself scored like the judges (1/2 where P* or the label is exactly 1/2)
    oracle_acc = float(np.mean([0.5 * (np.sign(e.metadata["p_star"] - 0.5) * np.sign(e.label - 0.5) + 1)
                                for e in eval_pairs]))  # fmt: skip
    summary["judges"]["oracle_accuracy_on_labels"] = oracle_acc
    message = (f"held-out slice ({len(eval_pairs)} pairs): PM accuracy {pm['accuracy']:.3f}, RM accuracy "
               f"{rm['accuracy']:.3f} (the oracle P* itself: {oracle_acc:.3f})")  # fmt: skip
    return judge_model, message


def stage_policies(
    cfg: DemoConfig, run: Path, train_prompts: list, summary: dict[str, Any]
) -> dict[str, Any]:
    """Stage 5: Nash-MD-PG, RLHF and offline IPO, each on a fresh base model with LoRA. Returns their results."""
    trained: dict[str, Any] = {}
    for name, fn in (("Nash-MD", lambda: train_nash_md(cfg, run, train_prompts)),
                     ("RLHF", lambda: train_rlhf(cfg, run, train_prompts)),
                     ("IPO", lambda: train_ipo(cfg, run))):  # fmt: skip
        t0 = time.perf_counter()
        res = fn()
        trained[name] = res
        print(f"    {name}: {res.summary.get('steps')} steps in {time.perf_counter() - t0:.1f} s", flush=True)
    summary["training"] = {name: {"steps": r.summary.get("steps"), "train": r.summary.get("train"),
                                  "timings_s": r.timings} for name, r in trained.items()}  # fmt: skip
    return trained


def stage_tournament_and_report(cfg: DemoConfig, run: Path, device: str, env: Any, trained: dict, heldout_prompts: list,
                                mu_vec: Any, nu_section: dict | None, summary: dict[str, Any], clock: StageClock,
                                done: Any) -> None:  # fmt: skip
    """Stage 6: the tournament under the oracle on the held-out prompts, the claims, the targets, the report."""
    from nlhf.eval import PolicyEntry, run_tournament
    from nlhf.report import write_report

    base, base_tok = load_policy_model(cfg.model, seed=cfg.seed, device=device)
    entries = [PolicyEntry("reference", base, base_tok, spec=cfg.model)]
    for name in ("RLHF", "IPO", "Nash-MD"):
        r = trained[name]
        entries.append(PolicyEntry(name, r.policy.to(device).eval(), r.tokenizer, spec=str(r.out_dir)))
    result = run_tournament(entries, [p.prompt for p in heldout_prompts], env, tournament_config(cfg),
                            reference=entries[0], progress=True)  # fmt: skip
    claims = evaluate_claims(result, cfg.confidence, cfg.seed) if cfg.claims else None
    summary["tournament"] = result.to_dict()
    summary["claims"] = claims
    targets = class_targets(env, mu_vec, cfg) if mu_vec.min() > 0 else None
    summary["targets"] = None if targets is None else {k: v.tolist() for k, v in targets.items()}
    curves = plot_learning_curves({"preference model": run / "pm", "reward model": run / "rm",
                                   "Nash-MD": run / "nash_md", "RLHF": run / "rlhf", "IPO": run / "ipo"},
                                  run / "learning_curves.png")  # fmt: skip
    done(f"{len(heldout_prompts)} prompts x {cfg.eval_samples_per_prompt} samples per policy")
    sections = report_sections(cfg, summary, clock.stages, claims)
    if targets is not None:
        sections.insert(
            1, ("Each policy against its exact class-level target", targets_markdown(env, targets, result))
        )
    if summary.get("judge_targets"):
        sections.insert(2, ("Where the learned judges lead their trainers (class level, judges' held-out pair slice)",
                            judge_targets_markdown(summary["judge_targets"], env.classes, cfg.confidence)))  # fmt: skip
    if nu_section is not None:
        sections.append(("A reward model depends on the sampling distribution, a preference model does not",
                         sampling_dependence_markdown(nu_section, env.classes, cfg.confidence)))  # fmt: skip
    paths = write_report(result, run, title="nlhf demo: NLHF end to end under a known truth", sections=sections,
                         images={"learning curves": str(curves)} if curves else {})  # fmt: skip
    summary["stages"] = clock.stages
    summary["files"] = {k: str(v) for k, v in paths.items()}
    md = "\n\n".join(["# nlhf demo: NLHF end to end under a known truth", *(f"## {h}\n\n{t}" for h, t in sections),
                      "## Tournament\n\n" + result.to_markdown()]
                     + (["![learning curves](learning_curves.png)"] if curves else []))  # fmt: skip
    (run / "report.md").write_text(md + "\n")
    if cfg.lab:
        from nlhf.lab.showcase import run_lab_showcase

        run_lab_showcase(run / "lab", quick=not cfg.claims)
    (run / "summary.json").write_text(json.dumps(_json_safe(summary), indent=2) + "\n")
