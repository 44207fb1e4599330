"""The demo's section on the sampling distribution (issue 15): a reward model depends on it, a preference
model and its Nash equilibrium do not, shown on the language model's own responses.

From the reference samples the demo already drew (stage 2), two labelled pair sets are
built whose responses follow two different class mixes nu_A and nu_B: the same responses
resampled (seeded) with weights nu[class] / mu[class] (importance resampling, so the pooled
class mix of the drawn responses is about nu), two distinct responses of one prompt a pair,
labelled by the oracle's raters (Bernoulli(P*) votes, as in stage 2). A reward model and a
preference model are trained on each set (the demo's judge recipe, :func:`fit_judge`).
Each judge is then read at the CLASS level on the held-out slice's reference responses
(every pair of two responses of one prompt): the preference model's class matrix P_hat and
its regularised Nash equilibrium (:func:`nlhf.lab.regularized_nash`), the reward model's
class rewards (mean reward of a class's responses) and the RLHF optimum mu exp(r / tau) / Z
they imply. The population answer is in :mod:`nlhf.lab.sampling_dependence` (THEORY.md
Sec. 7.1): the Bradley-Terry fit moves with nu, the pairwise fit does not.

The claim, with a paired bootstrap over the held-out prompts (the same resampled prompts
for all four judges): D = TV(RLHF optimum of RM_A, of RM_B) - TV(Nash of PM_A, Nash of PM_B)
has its interval above 0 (the reward models' answers differ more than the preference
models' do). Whatever the run gives is reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nlhf.demo.config import DemoConfig
from nlhf.demo.stages import fit_judge

# Two sampling distributions over (structured, personal, direct, unfocused) whose Bradley-Terry
# fits rank the classes differently (nlhf.lab.sampling_dependence on the demo's P*: RLHF picks
# `personal` under A and `direct` under B; the Nash equilibrium is (1/3, 1/3, 1/3, 0) under both).
SAMPLING_MIXES: dict[str, tuple[float, ...]] = {"A": (0.4, 0.2, 0.2, 0.2), "B": (0.2, 0.5, 0.2, 0.1)}


def resampled_pairs(env: Any, records: Sequence[dict], nu: Sequence[float], n_pairs: int, raters: int,
                    seed: int) -> list[Any]:  # fmt: skip
    """``n_pairs`` labelled pairs whose responses follow the class mix ``nu`` (module docstring).

    ``records``: reference samples ``{"id", "prompt", "response", "class"}`` (class NAME). A
    pair: a prompt drawn uniformly among those with two distinct non-empty responses, then two
    of its distinct responses without replacement, with weights nu[c] / mu[c] (mu: the pooled
    class mix of ``records``). Labels: the mean of ``raters`` Bernoulli(P*) votes.
    """
    import torch

    from nlhf.data.schema import PreferenceExample
    from nlhf.envs import Annotator

    K = len(env.classes)
    index = {c: k for k, c in enumerate(env.classes)}
    classes = np.array([index[r["class"]] for r in records])
    mu = np.bincount(classes, minlength=K) / len(classes)
    weight = np.asarray(nu, dtype=np.float64) / np.clip(mu, 1e-12, None)  # (K,)
    by_prompt: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        if r["response"].strip():
            by_prompt.setdefault(r["id"], []).append(i)
    usable = [rows for rows in by_prompt.values() if len({records[i]["response"].strip() for i in rows}) >= 2]
    if not usable:
        raise ValueError("resampled_pairs: no prompt has two distinct non-empty reference responses")
    rng = np.random.default_rng([seed, 15])
    xs, firsts, seconds, meta = [], [], [], []
    while len(xs) < n_pairs:
        rows = usable[int(rng.integers(len(usable)))]
        w = weight[classes[rows]]
        a = rows[int(rng.choice(len(rows), p=w / w.sum()))]
        rest = [i for i in rows if records[i]["response"].strip() != records[a]["response"].strip()]
        w2 = weight[classes[rest]]
        b = rest[int(rng.choice(len(rest), p=w2 / w2.sum()))]
        xs.append(records[a]["prompt"])
        firsts.append(records[a]["response"])
        seconds.append(records[b]["response"])
        meta.append({"prompt_id": records[a]["id"], "first_class": records[a]["class"],
                     "second_class": records[b]["class"]})  # fmt: skip
    annotator = Annotator(env, seed=seed, chosen_first=False)
    draws = [annotator.labels(xs, firsts, seconds) for _ in range(raters)]
    labels = torch.stack([d[0] for d in draws]).mean(0)  # (N,) soft labels
    return [PreferenceExample(x, a, b, float(y), source=f"demo-nu:{i}", metadata={**m, "raters": raters})
            for i, (x, a, b, y, m) in enumerate(zip(xs, firsts, seconds, labels.tolist(), meta))]  # fmt: skip


def class_readings(judge: Any, env: Any, records: Sequence[dict]) -> dict[str, np.ndarray]:
    """Per held-out prompt, the sums the class-level readings are made of (bootstrap-ready).

    For every prompt g and every pair of its responses (both orders): ``p_sum[g, a, b]`` (the
    judge's P(y > y') summed over pairs with classes (a, b)) and ``count[g, a, b]``; with a
    reward (``judge.reward``), ``r_sum[g, c]`` and ``r_count[g, c]``. Shapes (G, K, K) and (G, K).
    Also the response-level data: ``pair_prob``, ``pair_first``, ``pair_second`` (every ordered pair, flat
    response indices, prompt-major), ``classes`` and ``group`` (N,) (and ``rewards`` (N,) with a reward).
    A reward judge's P(y > y') is sigmoid(r(y) - r(y')) from its N rewards (N forwards, not the
    N (S - 1) pairs' 2 N (S - 1) of ``judge.prob``; equal up to float rounding, tested).
    """
    K = len(env.classes)
    index = {c: k for k, c in enumerate(env.classes)}
    prompts = sorted({r["id"] for r in records})
    rows_of = {p: [r for r in records if r["id"] == p] for p in prompts}
    flat = [r for p in prompts for r in rows_of[p]]  # prompt-major
    cls = np.array([index[r["class"]] for r in flat])  # (N,)
    first, second, where = [], [], []  # flat indices of every ordered pair of one prompt's responses
    start = 0
    for g, p in enumerate(prompts):
        n = len(rows_of[p])
        for i in range(start, start + n):
            for j in range(start, start + n):
                if i != j:
                    first.append(i)
                    second.append(j)
                    where.append(g)
        start += n
    first_i, second_i = np.array(first, dtype=np.int64), np.array(second, dtype=np.int64)
    reward_fn = getattr(judge, "reward", None) or getattr(getattr(judge, "model", None), "reward", None)
    rewards = None
    if callable(reward_fn):
        rewards = np.asarray(
            reward_fn([r["prompt"] for r in flat], [r["response"] for r in flat]), dtype=np.float64
        )  # (N,)
        prob = 1.0 / (1.0 + np.exp(-(rewards[first_i] - rewards[second_i])))  # (pairs,)
    else:
        prob = np.asarray(
            judge.prob([flat[i]["prompt"] for i in first], [flat[i]["response"] for i in first],
                       [flat[j]["response"] for j in second]), dtype=np.float64,
        )  # (pairs,)  # fmt: skip
    G = len(prompts)
    p_sum, count = np.zeros((G, K, K)), np.zeros((G, K, K))
    cell = (
        np.array(where, dtype=np.int64),
        cls[first_i],
        cls[second_i],
    )  # (prompt, class, class) of each pair
    np.add.at(p_sum, cell, prob)
    np.add.at(count, cell, 1.0)
    group = np.repeat(np.arange(G), [len(rows_of[p]) for p in prompts])  # (N,) prompt of each response
    # the response-level data behind the sums (nlhf.demo.judge_targets reads the judges at the response level too)
    out = {"p_sum": p_sum, "count": count, "pair_prob": prob, "pair_first": first_i, "pair_second": second_i,
           "classes": cls, "group": group}  # fmt: skip
    if rewards is not None:
        r_sum, r_count = np.zeros((G, K)), np.zeros((G, K))
        np.add.at(r_sum, (group, cls), rewards)
        np.add.at(r_count, (group, cls), 1.0)
        out.update(r_sum=r_sum, r_count=r_count, rewards=rewards)
    return out


def answers(
    readings: dict[str, np.ndarray], idx: np.ndarray, mu: np.ndarray, tau: float, rlhf_tau: float
) -> dict:
    """Class-level answers of one judge on the prompts ``idx``: P_hat and its regularised Nash equilibrium, and
    (reward models) the class rewards and the RLHF optimum. Classes never compared get P_hat = 1/2."""
    from nlhf.lab import regularized_nash
    from nlhf.lab.psipo import rlhf_optimum

    p_sum, count = readings["p_sum"][idx].sum(0), readings["count"][idx].sum(0)  # (K, K)
    P_hat = np.where(count > 0, p_sum / np.maximum(count, 1), 0.5)
    np.fill_diagonal(P_hat, 0.5)
    P_hat = 0.5 * (P_hat + 1.0 - P_hat.T)  # symmetrise (a preference model is symmetric by construction)
    out: dict[str, Any] = {"P": P_hat, "nash_tau": regularized_nash(P_hat, mu, tau)}
    if "r_sum" in readings:
        r_count = readings["r_count"][idx].sum(0)
        r = np.where(r_count > 0, readings["r_sum"][idx].sum(0) / np.maximum(r_count, 1), -np.inf)
        out["reward"] = r
        out["rlhf"] = rlhf_optimum(np.where(np.isfinite(r), r, r[np.isfinite(r)].min() - 10.0), mu, rlhf_tau)
    return out


def _tv(p: np.ndarray, q: np.ndarray) -> float:
    return 0.5 * float(np.abs(p - q).sum())


def run_sampling_dependence(cfg: DemoConfig, run: Path, env: Any, judge_model: str, train_ids: set[str],
                            heldout_ids: set[str]) -> dict[str, Any]:  # fmt: skip
    """Build the two pair sets from ``run/pairs/reference_samples.jsonl``, train RM + PM on each, read them at the
    class level on the held-out slice, and test the claim (module docstring). Writes ``run/nu_<A|B>/``."""
    import json

    from nlhf.data import save_preferences
    from nlhf.judges import load_judge

    records = [
        json.loads(line) for line in (run / "pairs" / "reference_samples.jsonl").read_text().splitlines()
    ]
    train = [r for r in records if r["id"] in train_ids]
    held = [r for r in records if r["id"] in heldout_ids]
    K = len(env.classes)
    index = {c: k for k, c in enumerate(env.classes)}
    mu = np.bincount([index[r["class"]] for r in records], minlength=K) / len(records)
    mu = np.clip(mu, 1e-6, None) / np.clip(mu, 1e-6, None).sum()
    readings: dict[str, dict] = {}
    for name, nu in SAMPLING_MIXES.items():
        pairs = resampled_pairs(env, train, nu, cfg.nu_pairs, cfg.raters_per_pair, cfg.seed)
        folder = run / f"nu_{name}"
        (folder / "pairs").mkdir(parents=True, exist_ok=True)
        save_preferences(pairs, folder / "pairs" / "train.jsonl")
        save_preferences(
            pairs[: max(1, len(pairs) // 10)], folder / "pairs" / "eval.jsonl"
        )  # loop's eval only
        for kind in ("rm", "pm"):
            fit_judge(kind, cfg, folder, judge_model, epochs=1.0)
            readings[f"{kind}_{name}"] = class_readings(
                load_judge(str(folder / kind), cfg.eval_batch_size), env, held
            )
    G = readings["pm_A"]["p_sum"].shape[0]

    def stats(idx: np.ndarray) -> dict:
        a = {k: answers(v, idx, mu, cfg.tau, cfg.rlhf_tau) for k, v in readings.items()}
        rm_tv, pm_tv = (
            _tv(a["rm_A"]["rlhf"], a["rm_B"]["rlhf"]),
            _tv(a["pm_A"]["nash_tau"], a["pm_B"]["nash_tau"]),
        )
        return {"answers": a, "rm_tv": rm_tv, "pm_tv": pm_tv, "difference": rm_tv - pm_tv}

    point = stats(np.arange(G))
    rng = np.random.default_rng([cfg.seed, 151])
    draws = [stats(rng.integers(0, G, size=G)) for _ in range(cfg.bootstrap)]
    alpha = 1.0 - cfg.confidence
    interval = {k: [float(np.quantile([d[k] for d in draws], alpha / 2)), float(np.quantile([d[k] for d in draws], 1 - alpha / 2))]
                for k in ("rm_tv", "pm_tv", "difference")}  # fmt: skip
    top = {k: env.classes[int(np.argmax(point["answers"][k]["reward"]))] for k in ("rm_A", "rm_B")}
    top_share = {k: float(np.mean([np.argmax(d["answers"][k]["reward"]) == env.classes.index(top[k]) for d in draws]))
                 for k in ("rm_A", "rm_B")}  # fmt: skip
    return {
        "mixes": {k: list(v) for k, v in SAMPLING_MIXES.items()},
        "pairs_per_mix": cfg.nu_pairs,
        "heldout_prompts": G,
        "answers": {
            k: {n: np.asarray(x).round(4).tolist() for n, x in v.items()} for k, v in point["answers"].items()
        },
        "rm_top_class": top,
        "rm_top_class_bootstrap_share": top_share,
        "rm_tv": point["rm_tv"],
        "pm_tv": point["pm_tv"],
        "difference": point["difference"],
        "interval": interval,
        "holds": bool(interval["difference"][0] > 0),
    }


def sampling_dependence_markdown(s: dict[str, Any], classes: Sequence[str], confidence: float) -> str:
    """The report section: the four judges' class-level answers and the claim with its interval."""
    fmt = lambda v: "(" + ", ".join(f"{x:.2f}" for x in v) + ")"  # noqa: E731
    pct = f"{100 * confidence:g}%"
    a = s["answers"]
    lines = [
        f"Two pair sets of {s['pairs_per_mix']} pairs each, resampled from the reference responses so that their "
        f"classes ({', '.join(classes)}) follow nu_A = {fmt(s['mixes']['A'])} and nu_B = {fmt(s['mixes']['B'])}, "
        f"labelled by the oracle's raters; a reward model and a preference model trained on each; every judge read "
        f"at the class level on the {s['heldout_prompts']} held-out-slice prompts' reference responses.",
        "",
        "| judge | class rewards | RLHF top class (bootstrap share) | RLHF optimum | Nash equilibrium (tau) of its P_hat |",
        "|---|---|---|---|---|",
    ]
    for name in ("A", "B"):
        rm, pm = a[f"rm_{name}"], a[f"pm_{name}"]
        lines.append(f"| reward model, nu_{name} | {fmt(rm['reward'])} | {s['rm_top_class'][f'rm_{name}']} "
                     f"({s['rm_top_class_bootstrap_share'][f'rm_{name}']:.2f}) | {fmt(rm['rlhf'])} | - |")  # fmt: skip
        lines.append(f"| preference model, nu_{name} | - | - | - | {fmt(pm['nash_tau'])} |")
    iv = s["interval"]
    lines += [
        "",
        f"TV between the two reward models' RLHF optima {s['rm_tv']:.3f} [{iv['rm_tv'][0]:.3f}, {iv['rm_tv'][1]:.3f}]; "
        f"between the two preference models' Nash equilibria {s['pm_tv']:.3f} [{iv['pm_tv'][0]:.3f}, "
        f"{iv['pm_tv'][1]:.3f}]. **Claim: the reward models' answers differ more than the preference models' "
        f"(paired bootstrap over prompts, {pct}): difference {s['difference']:+.3f} [{iv['difference'][0]:+.3f}, "
        f"{iv['difference'][1]:+.3f}]. {'HOLDS' if s['holds'] else 'DOES NOT HOLD'}.**",
    ]
    return "\n".join(lines)
