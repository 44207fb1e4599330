"""The stages of ``nlhf demo`` (:func:`nlhf.demo.run.run_demo` wires them): models and prompts,
reference samples and oracle labels, the judges, the three policies, the tournament's config.

Each function does one stage's work and nothing else; torch, transformers and the trainers
load inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nlhf.demo.config import MLP_MODULES, TINY, DemoConfig


class StageClock:
    """One status line per stage: ``[i/n] name: message (wall s, cpu s)``; keeps every stage's times.

    ``cpu_s`` is this process's CPU time over the stage; on a shared machine
    ``cpu_s / threads`` estimates the wall time the stage would take with ``threads``
    cores to itself (reported as ``quiet_estimate_s``). ``gflop``: the stage's matmul FLOPs in
    every ``nn.Linear`` call, forward and backward (:class:`nlhf.models.flops.LinearFlopCounter`);
    ``gflops_per_s``: ``gflop`` over the quiet-machine time.
    """

    def __init__(self, total: int, threads: int) -> None:
        self.total = total
        self.threads = max(1, threads)
        self.stages: list[dict[str, Any]] = []

    def start(self, index: int, name: str) -> Any:
        from nlhf.models.flops import LinearFlopCounter

        wall0, cpu0 = time.perf_counter(), time.process_time()
        load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"[{index}/{self.total}] {name} ...", flush=True)
        flops = LinearFlopCounter().__enter__()  # every nn.Linear call of the stage, forward and backward

        def done(message: str) -> dict[str, Any]:
            flops.__exit__(None, None, None)
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            quiet = min(wall, cpu / self.threads)
            row = {"stage": name, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                   "quiet_estimate_s": round(quiet, 1), "load_avg": round(0.5 * (load0 + load1), 2),
                   "gflop": round(flops.total / 1e9, 1), "gflop_forward": round(flops.forward / 1e9, 1),
                   "gflops_per_s": round(flops.total / 1e9 / max(quiet, 1e-9), 2), "status": message}  # fmt: skip
            self.stages.append(row)
            print(
                f"[{index}/{self.total}] {name}: {message} ({wall:.1f} s wall, {cpu:.1f} s cpu)", flush=True
            )
            return row

        return done


def load_policy_model(name: str, *, seed: int, device: str) -> tuple[Any, Any]:
    """A FRESH ``(model, tokenizer)`` for ``name`` (``"tiny"``: :mod:`nlhf.models.tiny` seeded by ``seed``).

    Called once per trainer: peft injects LoRA layers into the model it wraps, so trainers
    must never share a base model.
    """
    if name == TINY:
        from nlhf.models.tiny import tiny_causal_lm, tiny_tokenizer

        tok = tiny_tokenizer()
        return tiny_causal_lm(tokenizer=tok, seed=seed).to(device), tok
    from nlhf.models.loading import load_causal_lm

    return load_causal_lm(name, device=device)


def tiny_encoder_dir(path: Path, seed: int = 0) -> Path:
    """Write a random 2-layer, 32-wide BERT with the all-MiniLM-L6-v2 tokenizer to ``path`` (tests, CI).

    The same backbone as ``tests/models/conftest.py``'s ``make_tiny_bert``, saved so that the
    judge trainers (which read a name or path) can load it.
    """
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from nlhf.models.loading import minilm_dir

    if (path / "config.json").is_file():
        return path
    tok = AutoTokenizer.from_pretrained(str(minilm_dir()))
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=512)  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertModel(config).eval()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def lora_settings(cfg: DemoConfig, model: Any) -> Any:
    """LoRA on ``cfg.lora_modules`` of the last ``cfg.lora_last_layers`` blocks (all blocks when 0).

    peft matches a target name against the END of a module's name, so
    ``layers.29.self_attn.q_proj`` picks one layer's projection.
    """
    from nlhf.models.lora import LoraSettings

    if cfg.lora_last_layers == 0:
        targets = tuple(cfg.lora_modules)
    else:
        n_layers = int(model.config.num_hidden_layers)
        first = max(0, n_layers - cfg.lora_last_layers)
        targets = tuple(
            f"layers.{i}.{'mlp' if m in MLP_MODULES else 'self_attn'}.{m}"
            for i in range(first, n_layers)
            for m in cfg.lora_modules
        )
    return LoraSettings(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules=targets)


def pick_prompts(split: str, n: int) -> list[Any]:
    """The first ``n`` prompts of ``split`` (0: all), round-robin over the kinds (list, fact, explain, open)."""
    from nlhf.envs.prompts import KINDS, load_env_prompts

    rows = load_env_prompts(split)
    by_kind = {k: [p for p in rows if p.metadata["kind"] == k] for k in KINDS}
    order = [
        by_kind[k][i] for i in range(max(map(len, by_kind.values()))) for k in KINDS if i < len(by_kind[k])
    ]
    if n > len(order):
        raise ValueError(f"{split} prompts: asked for {n}, the built-in set has {len(order)}")
    return order[: n or len(order)]


def sample_responses(model: Any, tokenizer: Any, prompts: Sequence[Any], samples: int, max_new_tokens: int, *,
                     batch_rows: int, seed: int, desc: str = "sampling") -> list[list[str]]:  # fmt: skip
    """``samples`` responses of ``model`` to each prompt (temperature 1, no cut): ``out[i][j]`` text.

    One KV-cached decode loop per batch of ``batch_rows`` rows (:func:`nlhf.sampling.generate`),
    each batch with its own generator seeded from ``(seed, batch index)``.
    """
    import torch
    from tqdm.auto import tqdm

    from nlhf.data.collate import eos_id, pad_token_id
    from nlhf.data.prompt_batches import make_prompt_collate as make_collate
    from nlhf.data.prompt_batches import tokenize_prompts
    from nlhf.sampling import SamplingConfig, generate, make_generator

    items = tokenize_prompts(tokenizer, prompts, None)
    rows = [(i, it) for i, it in enumerate(items) for _ in range(samples)]  # prompt-major
    collate = make_collate(pad_token_id(tokenizer))
    sampling = SamplingConfig(max_new_tokens=max_new_tokens)
    device = next(model.parameters()).device
    out: list[list[str]] = [[] for _ in prompts]
    starts = range(0, len(rows), batch_rows)
    for b, start in enumerate(tqdm(starts, desc=desc, unit="batch", leave=False)):
        chunk = rows[start : start + batch_rows]
        batch = collate([it for _, it in chunk]).to(device)
        gen = make_generator(int(seed) * 1_000_003 + b, device)
        with torch.no_grad():
            rollout = generate(model, batch.prompts.input_ids, batch.prompts.attention_mask, sampling, gen,
                               eos_token_id=eos_id(tokenizer), pad_token_id=pad_token_id(tokenizer))  # fmt: skip
        for (i, _), text in zip(chunk, rollout.response_texts(tokenizer)):
            out[i].append(text)
    return out


def response_pairs(n: int, pairing: str) -> list[tuple[int, int]]:
    """Index pairs of a prompt's n responses: ``"disjoint"`` (0, 1), (2, 3), ...; ``"all"`` every i < j.

    >>> response_pairs(4, "disjoint"), response_pairs(3, "all")
    ([(0, 1), (2, 3)], [(0, 1), (0, 2), (1, 2)])
    """
    if pairing == "disjoint":
        return [(j, j + 1) for j in range(0, n - 1, 2)]
    if pairing == "all":
        return [(i, j) for i in range(n) for j in range(i + 1, n)]
    raise ValueError(f"pairing must be 'disjoint' or 'all', got {pairing!r}")


def label_pairs(env: Any, prompts: Sequence[Any], responses: Sequence[Sequence[str]], raters: int, seed: int,
                pairing: str = "disjoint") -> tuple[list[Any], dict[str, int]]:  # fmt: skip
    """Pairs of each prompt's responses (:func:`response_pairs`), labelled by ``raters`` Bernoulli(P*) draws.

    label = mean of the draws = a soft P(first > second) (THEORY Sec. 1: BCE and IPO take
    soft labels). Pairs that a preference dataset cannot hold (an empty response, or two
    identical ones, :mod:`nlhf.data.formats`) are dropped and counted. Metadata: the prompt's
    id, both classes and P*.
    """
    import torch

    from nlhf.data.schema import PreferenceExample
    from nlhf.envs import Annotator

    xs, firsts, seconds, meta = [], [], [], []
    dropped = {"empty": 0, "identical": 0}
    for p, ys in zip(prompts, responses):
        for i, j in response_pairs(len(ys), pairing):
            a, b = ys[i], ys[j]
            if not a.strip() or not b.strip():
                dropped["empty"] += 1
                continue
            if a.strip() == b.strip():
                dropped["identical"] += 1
                continue
            xs.append(p.prompt)
            firsts.append(a)
            seconds.append(b)
            meta.append({"prompt_id": p.metadata.get("id", ""), "kind": p.metadata.get("kind", "")})
    if not xs:
        raise RuntimeError(f"no usable pairs: every pair had an empty or identical response ({dropped})")
    annotator = Annotator(env, seed=seed, chosen_first=False)
    draws = [annotator.labels(xs, firsts, seconds) for _ in range(raters)]
    labels = torch.stack([d[0] for d in draws]).mean(0)  # (N,) in {0, 1/k, ..., 1}
    p_star = draws[0][1]  # (N,)
    classes_a, classes_b = env.classify(xs, firsts), env.classify(xs, seconds)
    examples = []
    for i in range(len(xs)):
        m = {**meta[i], "p_star": round(float(p_star[i]), 6), "first_class": env.classes[classes_a[i]],
             "second_class": env.classes[classes_b[i]], "raters": raters}  # fmt: skip
        examples.append(PreferenceExample(xs[i], firsts[i], seconds[i], float(labels[i]), source=f"demo:{i}",
                                          metadata=m))  # fmt: skip
    return examples, dropped


def split_pairs_by_prompt(examples: Sequence[Any], fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """(train, held-out) pairs; a seeded ``fraction`` of the PROMPTS goes to the held-out slice (no prompt in both)."""
    import numpy as np

    ids = sorted({e.metadata["prompt_id"] for e in examples})
    order = np.random.default_rng([seed, 11]).permutation(len(ids))
    n_eval = min(len(ids) - 1, max(1, int(round(fraction * len(ids)))))
    held = {ids[k] for k in order[:n_eval]}
    train = [e for e in examples if e.metadata["prompt_id"] not in held]
    evaluation = [e for e in examples if e.metadata["prompt_id"] in held]
    return train, evaluation


def cap_pairs_per_prompt(examples: Sequence[Any], cap: int, seed: int) -> list[Any]:
    """At most ``cap`` pairs of each prompt (0: all), a seeded subset kept in file order; prompts in sorted id order.

    With ``samples_per_prompt = S`` and ``pairing = "all"`` a prompt has S (S - 1) / 2 pairs; the cap keeps the
    judges' training time linear in S while every response still appears in about 2 cap / S pairs.
    """
    import numpy as np

    if cap <= 0:
        return list(examples)
    by_prompt: dict[str, list[Any]] = {}
    for e in examples:
        by_prompt.setdefault(e.metadata["prompt_id"], []).append(e)
    rng = np.random.default_rng([seed, 16])
    kept: list[Any] = []
    for pid in sorted(by_prompt):
        rows = by_prompt[pid]
        kept += [rows[i] for i in sorted(rng.permutation(len(rows))[:cap])]
    return kept


def _count_lines(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def fit_judge(
    kind: str, cfg: DemoConfig, run: Path, judge_model: str, epochs: float | None = None
) -> dict[str, Any]:
    """Train the preference (``"pm"``: of ``cfg.pm_kind``) or reward (``"rm"``) model on ``run/pairs/train.jsonl``
    (scored on ``run/pairs/eval.jsonl``) into ``run/<kind>``, for ``epochs`` (default ``cfg.judge_epochs``);
    metrics.json's content."""
    from nlhf.train.config import LoopConfig, OptimConfig
    from nlhf.train.fit import FitConfig, run_fit

    n_train = _count_lines(run / "pairs" / "train.jsonl")
    fit = FitConfig(
        data=str(run / "pairs" / "train.jsonl"),
        eval_data=str(run / "pairs" / "eval.jsonl"),
        model=judge_model,
        out=str(run / kind),
        rank=cfg.pm_rank,
        max_length=cfg.judge_max_length,
        optim=OptimConfig(lr=cfg.judge_lr, warmup_steps=5),
        loop=LoopConfig(
            seed=cfg.seed,
            epochs=cfg.judge_epochs if epochs is None else epochs,
            micro_batch_size=min(cfg.judge_batch_size, n_train),
            log_every=5,
            device=cfg.device,
            tensorboard=False,
        ),  # fmt: skip
    )
    return run_fit("gpm" if kind == "pm" and cfg.pm_kind == "general" else kind, fit)


def judge_vs_oracle(judge: Any, examples: Sequence[Any]) -> dict[str, float]:
    """How a learned judge agrees with the truth on pairs: mean |P - P*|, and the sign agreement where P* != 1/2."""
    import numpy as np

    p = judge.prob([e.prompt for e in examples], [e.first for e in examples], [e.second for e in examples])
    p = np.asarray(p, dtype=np.float64)
    star = np.array([e.metadata["p_star"] for e in examples])
    decided = np.abs(star - 0.5) > 1e-9
    agree = float(np.mean((p[decided] > 0.5) == (star[decided] > 0.5))) if decided.any() else float("nan")
    return {"mean_abs_error_vs_p_star": float(np.mean(np.abs(p - star))), "sign_agreement_vs_p_star": agree,
            "n_pairs": len(examples), "n_decided": int(decided.sum())}  # fmt: skip


def _optim(cfg: DemoConfig) -> Any:
    from nlhf.train.config import OptimConfig

    return OptimConfig(lr=cfg.policy_lr, warmup_steps=0, schedule="constant")


def _loop(cfg: DemoConfig, steps: int | None, batch: int, epochs: float | None = None) -> Any:
    from nlhf.train.config import LoopConfig

    every = max(1, (steps or 10) // 10)
    return LoopConfig(seed=cfg.seed, max_steps=steps, epochs=epochs, micro_batch_size=batch, log_every=every,
                      eval_at_end=False, device=cfg.device, tensorboard=False)  # fmt: skip


def train_nash_md(cfg: DemoConfig, run: Path, train_prompts: Sequence[Any]) -> Any:
    """Nash-MD-PG (LoRA) against the preference model saved in ``run/pm`` (THEORY Sec. 4)."""
    import nlhf.models.preference_model  # noqa: F401  registers the kind that load_judge reads back
    from nlhf.sampling import SamplingConfig
    from nlhf.train.nash_md import NashMDConfig as OnlineConfig
    from nlhf.train.nash_md import run_nash_md as run_online

    model, tok = load_policy_model(cfg.model, seed=cfg.seed, device="cpu")
    online = OnlineConfig(
        algorithm="nash_md", tau=cfg.tau, mixture_coef=cfg.mixture_coef, model=cfg.model, judge=str(run / "pm"),
        out=str(run / "nash_md"), judge_batch_size=cfg.eval_batch_size, responses_per_prompt=cfg.nash_responses,
        sampling=SamplingConfig(max_new_tokens=cfg.max_new_tokens), lora=lora_settings(cfg, model),
        merge_adapter=False, optim=_optim(cfg), loop=_loop(cfg, cfg.nash_steps, cfg.nash_batch_size),
    )  # fmt: skip
    return run_online(online, model=model, tokenizer=tok, train_prompts=train_prompts)


def train_rlhf(cfg: DemoConfig, run: Path, train_prompts: Sequence[Any]) -> Any:
    """RLHF (RLOO policy gradient or PPO, LoRA) against the reward model saved in ``run/rm`` (THEORY Sec. 5)."""
    from nlhf.sampling import SamplingConfig
    from nlhf.train.rlhf import RLHFConfig, run_rlhf

    model, tok = load_policy_model(cfg.model, seed=cfg.seed, device="cpu")
    rlhf = RLHFConfig(
        algorithm=cfg.rlhf_algorithm, tau=cfg.rlhf_tau, group_size=cfg.rlhf_group_size, model=cfg.model,
        reward=str(run / "rm"), out=str(run / "rlhf"), reward_batch_size=cfg.eval_batch_size,
        sampling=SamplingConfig(max_new_tokens=cfg.max_new_tokens), lora=lora_settings(cfg, model),
        merge_adapter=False, optim=_optim(cfg), loop=_loop(cfg, cfg.rlhf_steps, cfg.rlhf_batch_size),
    )  # fmt: skip
    return run_rlhf(rlhf, model=model, tokenizer=tok, train_prompts=train_prompts)


def ipo_subset(src: Path, dst: Path, n: int, seed: int) -> Path:
    """``n`` lines of the JSONL ``src`` drawn without replacement (seeded, file order kept) into ``dst``; all when n = 0
    or n >= the number of lines. Offline IPO trains on this subset, so mu's log-probs are computed for it only."""
    import numpy as np

    lines = src.read_text(encoding="utf-8").splitlines()
    if n <= 0 or n >= len(lines):
        return src
    keep = np.sort(np.random.default_rng(seed).choice(len(lines), size=n, replace=False))
    dst.write_text("".join(lines[i] + "\n" for i in keep), encoding="utf-8")
    return dst


def train_ipo(cfg: DemoConfig, run: Path) -> Any:
    """Offline IPO (LoRA, summed log-probs, soft labels) on ``cfg.ipo_pairs`` of ``pairs/train.jsonl`` (THEORY Sec. 5,
    PsiPO Eq. 17)."""
    from nlhf.train.dpo import OfflineConfig, run_offline

    data = ipo_subset(
        run / "pairs" / "train.jsonl", run / "pairs" / "ipo_train.jsonl", cfg.ipo_pairs, cfg.seed
    )
    model, tok = load_policy_model(cfg.model, seed=cfg.seed, device="cpu")
    offline = OfflineConfig(
        loss="ipo", tau=cfg.ipo_tau, reduction="sum", data=str(data), model=cfg.model,
        out=str(run / "ipo"), lora=lora_settings(cfg, model), merge_adapter=False, eval_kl=False,
        optim=_optim(cfg), loop=_loop(cfg, None, min(cfg.ipo_batch_size, _count_lines(data)), epochs=cfg.ipo_epochs),
    )  # fmt: skip
    return run_offline(offline, model=model, tokenizer=tok)


def tournament_config(cfg: DemoConfig) -> Any:
    """The evaluator's config: the demo's token limit and sample count, exact sampling (temperature 1)."""
    from nlhf.eval import TournamentConfig

    return TournamentConfig(
        samples_per_prompt=cfg.eval_samples_per_prompt, max_new_tokens=cfg.max_new_tokens, temperature=1.0,
        top_k=0, top_p=1.0, batch_size=cfg.eval_batch_size, interval=cfg.interval, confidence=cfg.confidence,
        bootstrap=cfg.bootstrap, best_of_n=0, seed=cfg.seed,
    )  # fmt: skip
