"""The ``nlhf demo`` pipeline: NLHF end to end on a real language model, scored by a known truth.

Issue 6. Five stages, each printed as one status line with its time (tqdm bars inside the
long ones), everything written into one run directory:

1. **model and environment**: the policy's base model mu (``model``: SmolLM2-135M-Instruct
   by default, ``"tiny"`` for tests) and the cyclic rater-population oracle P*
   (:func:`nlhf.envs.default_rater_population`, THEORY.md Sec. 7);
2. **reference samples and oracle labels**: ``samples_per_prompt`` responses of mu to each
   training prompt, paired (0, 1), (2, 3), ...; each pair labelled by ``raters_per_pair``
   simulated raters (Bernoulli(P*) draws, :class:`nlhf.envs.Annotator`; the label is their
   mean, a soft label P(first > second)); pairs split BY PROMPT into a training and a
   held-out slice (``pair_eval_fraction``), saved as JSONL. mu's class distribution is
   reported (every class should hold >= 5%), with the exact class-level analysis of the
   cyclic environment and of the Bradley-Terry control (:func:`nlhf.envs.environment_summary`);
3. **judges**: the pairwise preference model and the Bradley-Terry reward model trained on
   the training slice (:func:`nlhf.train.fit.run_fit`), accuracy on the held-out slice;
4. **policies** (LoRA, a fresh base model per trainer, since peft injects adapters in
   place): Nash-MD-PG against the preference model (:func:`nlhf.train.online.run_online`,
   THEORY Sec. 4), RLHF (RLOO policy gradient or PPO) against the reward model
   (:func:`nlhf.train.rlhf.run_rlhf`, Sec. 5), offline IPO on the labelled pairs
   (:func:`nlhf.train.offline.run_offline`, Sec. 5);
5. **tournament** under the ORACLE on the held-out prompts (never seen in training nor in
   any choice of hyper-parameter): reference, RLHF, IPO, Nash-MD (:mod:`nlhf.eval`), and the
   report: the win-rate matrix with 95% intervals, KL, exploitability, class distributions,
   judge accuracies, learning curves, timings, and the two claims of issue 6 tested:
   (i) Nash-MD beats the reference with a 95% interval above 1/2; (ii) Nash-MD is less
   exploitable than RLHF on the cyclic environment.

Every budget knob is a field of :class:`DemoConfig` (saved to ``config.yaml`` in the run
directory); ``--quick`` applies :data:`QUICK` (a smoke run of every stage, no claim made).
Importing this module is cheap: torch, transformers and matplotlib load inside functions.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from nlhf.config import check, load_config, save_config, to_dict

TINY = "tiny"  # model / judge_model name of the random test models
ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True)
class DemoConfig:
    """Everything ``nlhf demo`` does, with the budget knobs in view (``--set key=value``, ``--config YAML``).

    Token budget: classes are decided by a response's OPENING (:mod:`nlhf.envs.features`),
    so ``max_new_tokens`` is small; the same limit is used to sample training pairs, to
    train the online policies and in the tournament (a response's class depends on where
    it is cut). ``lora_last_layers``: LoRA only on the last N transformer blocks (0: all),
    so backward stops there (a Llama-style ``model.layers.<i>`` layout is assumed when N > 0).
    """

    # models
    model: str = "smollm2"  # the policy's base model mu: smollm2, tiny, a path or a hub name
    judge_model: str = "minilm"  # PM / RM backbone: minilm, tiny (random 2-layer BERT), a path
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    threads: int = 0  # torch CPU threads (0: torch's default)
    seed: int = 0
    # prompts (nlhf.envs.load_env_prompts)
    n_train_prompts: int = 152  # of the 152 training prompts (round-robin over kinds); 0: all
    n_heldout_prompts: int = 48  # of the 48 held-out prompts (the claims are measured here); 0: all
    # stage 2: reference samples and oracle labels
    samples_per_prompt: int = 8  # mu's responses per training prompt
    max_new_tokens: int = 16
    raters_per_pair: int = 16  # Bernoulli(P*) draws per pair; the label is their mean
    # "all": every C(S, 2) pair of a prompt's samples (28 at S = 8: the judges see 7x the pairs for the same
    # sampling cost; PM sign agreement with P* on the held-out pair slice 0.638 in the default run, against 0.589
    # with "disjoint" pairs (0,1),(2,3),.. and 2 epochs)
    pairing: Literal["disjoint", "all"] = "all"
    pair_eval_fraction: float = 0.15  # training prompts whose pairs only evaluate the judges
    sample_batch_rows: int = 32  # rows per decoding batch
    # stage 3: preference model and reward model
    judge_lr: float = 1e-4
    judge_epochs: float = 1.0
    judge_batch_size: int = 16
    judge_max_length: int = 128
    # stage 4: policies (shared)
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_last_layers: int = 4
    lora_modules: tuple[str, ...] = ATTENTION_MODULES + MLP_MODULES
    policy_lr: float = 1e-3
    # Nash-MD-PG (THEORY Sec. 4)
    nash_steps: int = 40
    nash_batch_size: int = 8  # prompts a step
    # K responses (and K opponents) per prompt, all K^2 pairs judged, leave-one-out baseline (issue 14)
    nash_responses: int = 4
    tau: float = 0.05  # KL strength of Nash-MD (preference units)
    mixture_coef: float = 0.125  # beta: weight of mu in the token-level geometric mixture
    # RLHF (THEORY Sec. 5): critic-free policy gradient (RLOO) or PPO, against the reward model
    rlhf_algorithm: Literal["rlhf_pg", "ppo"] = "rlhf_pg"
    rlhf_steps: int = 40
    rlhf_batch_size: int = 8  # prompts a step
    rlhf_group_size: int = 2  # responses per prompt (leave-one-out baseline)
    rlhf_tau: float = 0.05  # KL strength of RLHF (reward units)
    # offline IPO (THEORY Sec. 5), summed log-probs
    ipo_tau: float = 0.1
    ipo_pairs: int = 544  # a seeded random subset of the training pairs (0: all); mu's log-probs are computed for these only
    ipo_epochs: float = 1.0
    ipo_batch_size: int = 8
    # stage 5: tournament under the oracle on the held-out prompts
    eval_samples_per_prompt: int = 6
    eval_batch_size: int = 32  # rows per decoding / judging batch in the tournament (and the online judges)
    bootstrap: int = 1000
    confidence: float = 0.95
    # win-rate intervals: "auto" = prompt-clustered t for the oracle's probabilities (nlhf.eval.intervals)
    interval: Literal["auto", "cluster_t", "wilson", "clopper_pearson"] = "auto"
    # what the run claims: False for --quick (a smoke run)
    claims: bool = True
    lab: bool = False  # also run the exact lab showcase (nlhf.demo.run_lab_showcase) as a section

    def __post_init__(self) -> None:
        for key in ("n_train_prompts", "n_heldout_prompts"):
            check(getattr(self, key) >= 0, key, f"must be >= 0 (0: all), got {getattr(self, key)}")
        check(self.samples_per_prompt >= 2 and self.samples_per_prompt % 2 == 0, "samples_per_prompt",
              f"must be an even number >= 2 (responses are paired), got {self.samples_per_prompt}")  # fmt: skip
        check(self.max_new_tokens >= 1, "max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        check(self.raters_per_pair >= 1, "raters_per_pair", f"must be >= 1, got {self.raters_per_pair}")
        check(0.0 < self.pair_eval_fraction < 1.0, "pair_eval_fraction",
              f"must be in (0, 1), got {self.pair_eval_fraction}")  # fmt: skip
        for key in ("sample_batch_rows", "judge_batch_size", "nash_batch_size", "nash_responses", "rlhf_batch_size",
                    "ipo_batch_size", "eval_batch_size", "nash_steps", "rlhf_steps", "lora_r",
                    "eval_samples_per_prompt"):  # fmt: skip
            check(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        check(self.ipo_pairs >= 0, "ipo_pairs", f"must be >= 0 (0: all), got {self.ipo_pairs}")
        for key in ("judge_lr", "policy_lr", "tau", "rlhf_tau", "ipo_tau", "judge_epochs", "ipo_epochs"):
            value = getattr(self, key)
            check(value > 0 and math.isfinite(value), key, f"must be a finite number > 0, got {value}")
        check(0.0 <= self.mixture_coef <= 1.0, "mixture_coef", f"must be in [0, 1], got {self.mixture_coef}")
        check(self.rlhf_group_size >= 2, "rlhf_group_size", f"must be >= 2, got {self.rlhf_group_size}")
        check(
            self.lora_last_layers >= 0,
            "lora_last_layers",
            f"must be >= 0 (0: all), got {self.lora_last_layers}",
        )
        check(len(self.lora_modules) > 0, "lora_modules", "must name at least one module")
        check(self.judge_max_length >= 16, "judge_max_length", f"must be >= 16, got {self.judge_max_length}")
        check(self.threads >= 0, "threads", f"must be >= 0, got {self.threads}")


# ``nlhf demo --quick``: every stage on a few prompts and steps; makes no significance claim.
QUICK: dict[str, Any] = {
    "n_train_prompts": 16,
    "n_heldout_prompts": 8,
    "samples_per_prompt": 2,
    "max_new_tokens": 16,
    "raters_per_pair": 1,
    "pair_eval_fraction": 0.25,
    "judge_epochs": 1.0,
    "nash_steps": 2,
    "nash_batch_size": 4,
    "rlhf_steps": 2,
    "rlhf_batch_size": 2,
    "ipo_epochs": 1.0,
    "ipo_pairs": 0,
    "ipo_batch_size": 4,
    "eval_samples_per_prompt": 1,
    "bootstrap": 100,
    "claims": False,
}


def load_demo_config(
    config_path: str | Path | None = None, overrides: Sequence[str] = (), *, quick: bool = False, **flags: Any
) -> DemoConfig:
    """Defaults < :data:`QUICK` (with ``quick``) < the YAML file < ``key=value`` overrides < non-None flags."""
    defaults = to_dict(DemoConfig())
    if quick:
        defaults.update(QUICK)
    return load_config(DemoConfig, config_path, overrides, defaults=defaults, flags=flags)


# ----------------------------------------------------------------------------- stage bookkeeping


class StageClock:
    """One status line per stage: ``[i/n] name: message (wall s, cpu s)``; keeps every stage's times.

    ``cpu_s`` is this process's CPU time over the stage; on a shared machine
    ``cpu_s / threads`` estimates the wall time the stage would take with ``threads``
    cores to itself (reported as ``quiet_estimate_s``).
    """

    def __init__(self, total: int, threads: int) -> None:
        self.total = total
        self.threads = max(1, threads)
        self.stages: list[dict[str, Any]] = []

    def start(self, index: int, name: str) -> Any:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"[{index}/{self.total}] {name} ...", flush=True)

        def done(message: str) -> dict[str, Any]:
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            row = {"stage": name, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                   "quiet_estimate_s": round(min(wall, cpu / self.threads), 1),
                   "load_avg": round(0.5 * (load0 + load1), 2), "status": message}  # fmt: skip
            self.stages.append(row)
            print(
                f"[{index}/{self.total}] {name}: {message} ({wall:.1f} s wall, {cpu:.1f} s cpu)", flush=True
            )
            return row

        return done


# ----------------------------------------------------------------------------- models


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


# ----------------------------------------------------------------------------- prompts


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


# ----------------------------------------------------------------------------- stage 2: samples and labels


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


# ----------------------------------------------------------------------------- stage 3: judges


def _count_lines(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def fit_judge(kind: str, cfg: DemoConfig, run: Path, judge_model: str) -> dict[str, Any]:
    """Train the preference (``"pm"``) or reward (``"rm"``) model on ``pairs/train.jsonl``; metrics.json's content."""
    from nlhf.train.config import LoopConfig, OptimConfig
    from nlhf.train.fit import FitConfig, run_fit

    n_train = _count_lines(run / "pairs" / "train.jsonl")
    fit = FitConfig(
        data=str(run / "pairs" / "train.jsonl"),
        eval_data=str(run / "pairs" / "eval.jsonl"),
        model=judge_model,
        out=str(run / kind),
        max_length=cfg.judge_max_length,
        optim=OptimConfig(lr=cfg.judge_lr, warmup_steps=5),
        loop=LoopConfig(
            seed=cfg.seed,
            epochs=cfg.judge_epochs,
            micro_batch_size=min(cfg.judge_batch_size, n_train),
            log_every=5,
            device=cfg.device,
            tensorboard=False,
        ),  # fmt: skip
    )
    return run_fit(kind, fit)


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


# ----------------------------------------------------------------------------- stage 4: policies


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


# ----------------------------------------------------------------------------- stage 5: tournament and claims


def tournament_config(cfg: DemoConfig) -> Any:
    """The evaluator's config: the demo's token limit and sample count, exact sampling (temperature 1)."""
    from nlhf.eval import TournamentConfig

    return TournamentConfig(
        samples_per_prompt=cfg.eval_samples_per_prompt, max_new_tokens=cfg.max_new_tokens, temperature=1.0,
        top_k=0, top_p=1.0, batch_size=cfg.eval_batch_size, interval=cfg.interval, confidence=cfg.confidence,
        bootstrap=cfg.bootstrap, best_of_n=0, seed=cfg.seed,
    )  # fmt: skip


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


# ----------------------------------------------------------------------------- the pipeline


def run_demo(cfg: DemoConfig, out: str | Path) -> dict[str, Any]:
    """Run the five stages into ``out``; returns the summary (also ``summary.json``); prints the report path.

    The run directory receives ``config.yaml``, ``pairs/`` (reference samples and labelled
    pairs), ``pm/``, ``rm/``, ``nash_md/``, ``rlhf/``, ``ipo/`` (the trainers' own run
    directories: config, metrics.jsonl, policy adapter), ``learning_curves.png``,
    ``report.md``, ``report.html``, ``tournament.md``, ``win_rates.png``, ``results.json``
    (the tournament) and ``summary.json`` (everything else).
    """
    os.environ["HF_HUB_OFFLINE"] = "1"  # the demo never contacts a model hub
    import numpy as np
    import torch

    from nlhf.data import save_preferences
    from nlhf.envs import (
        class_distribution,
        default_bradley_terry,
        default_rater_population,
        environment_summary,
    )

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = Path(out)
    run.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run / "config.yaml")
    device = "cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu"
    clock = StageClock(5, torch.get_num_threads())
    summary: dict[str, Any] = {"config": to_dict(cfg), "device": device, "threads": torch.get_num_threads()}
    if not cfg.claims:
        print("quick/smoke run: every stage runs on a few prompts and steps; NO significance claim is made.")

    # 1. model and environment
    done = clock.start(1, "model + environment")
    torch.manual_seed(cfg.seed)
    ref_model, ref_tok = load_policy_model(cfg.model, seed=cfg.seed, device=device)
    env, control = default_rater_population(), default_bradley_terry()
    train_prompts = pick_prompts("train", cfg.n_train_prompts)
    heldout_prompts = pick_prompts("heldout", cfg.n_heldout_prompts)
    n_params = sum(p.numel() for p in ref_model.parameters())
    summary["environment"] = {"name": env.name, "classes": list(env.classes), "P": env.P.round(4).tolist(),
                              "condorcet_cycles": env.condorcet_cycles(), "raters": [
                                  {"name": r.name, "ranking": list(map(str, r.ranking)), "weight": r.weight}
                                  for r in env.raters]}  # fmt: skip
    summary["model"] = {"name": cfg.model, "parameters": n_params}
    done(f"{cfg.model} ({n_params / 1e6:.1f}M parameters) on {device}; {env.name} with "
         f"{len(env.classes)} classes, cycle {env.condorcet_cycles()}; {len(train_prompts)} train / "
         f"{len(heldout_prompts)} held-out prompts")  # fmt: skip

    # 2. reference samples, oracle labels, class-level analysis
    done = clock.start(2, "reference samples + oracle labels")
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
    save_preferences(train_pairs, run / "pairs" / "train.jsonl")
    save_preferences(eval_pairs, run / "pairs" / "eval.jsonl")
    mu_vec = class_distribution(classes, len(env.classes))  # (K,) unrounded: sums to 1
    mu = dict(zip(env.classes, mu_vec.round(4).tolist()))  # {class: share}, for the report
    analysis: dict[str, Any] = {}
    if mu_vec.min() > 0:
        analysis["cyclic"] = environment_summary(env.game, mu_vec)
        analysis["bradley_terry_control"] = environment_summary(control.game, mu_vec, reward=control.scores)
    else:
        analysis["note"] = f"class-level analysis skipped: mu has an empty class ({_fmt_dist(mu)})"
    summary["reference"] = {"class_distribution": mu, "min_share": float(mu_vec.min()),
                            "covers_every_class_5pct": bool(mu_vec.min() >= 0.05), "n_responses": int(
                                sum(len(s) for s in samples))}  # fmt: skip
    summary["pairs"] = {"train": len(train_pairs), "eval": len(eval_pairs), "dropped": dropped,
                        "raters_per_pair": cfg.raters_per_pair}  # fmt: skip
    summary["class_level_analysis"] = analysis
    del ref_model  # the tournament's reference is loaded fresh
    done(f"{summary['reference']['n_responses']} responses, mu = ({_fmt_dist(mu)}); {len(train_pairs)} + "
         f"{len(eval_pairs)} labelled pairs (train + held-out slice), dropped {dropped}")  # fmt: skip

    # 3. judges
    done = clock.start(3, "preference model + reward model")
    judge_model = (
        str(tiny_encoder_dir(run / "tiny_encoder", cfg.seed)) if cfg.judge_model == TINY else cfg.judge_model
    )
    pm = fit_judge("pm", cfg, run, judge_model)
    rm = fit_judge("rm", cfg, run, judge_model)
    from nlhf.judges import load_judge

    pm_judge, rm_judge = (
        load_judge(str(run / "pm"), cfg.eval_batch_size),
        load_judge(str(run / "rm"), cfg.eval_batch_size),
    )
    summary["judges"] = {
        name: {"accuracy": m["accuracy"], "log_loss": m["log_loss"], "ece": m["ece"], "n_eval": m["n_eval"],
               "n_train": m["n_train"], "steps": m["steps"], **judge_vs_oracle(j, eval_pairs)}
        for name, m, j in (("preference_model", pm, pm_judge), ("reward_model", rm, rm_judge))
    }  # fmt: skip
    # the ceiling: P* itself scored like the judges (1/2 where P* or the label is exactly 1/2)
    oracle_acc = float(np.mean([0.5 * (np.sign(e.metadata["p_star"] - 0.5) * np.sign(e.label - 0.5) + 1)
                                for e in eval_pairs]))  # fmt: skip
    summary["judges"]["oracle_accuracy_on_labels"] = oracle_acc
    del pm_judge, rm_judge
    done(f"held-out slice ({len(eval_pairs)} pairs): PM accuracy {pm['accuracy']:.3f}, RM accuracy "
         f"{rm['accuracy']:.3f} (the oracle P* itself: {oracle_acc:.3f})")  # fmt: skip

    # 4. policies
    done = clock.start(4, "policies (Nash-MD, RLHF, IPO)")
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
    done(", ".join(f"{n}: {r.summary.get('steps')} steps" for n, r in trained.items()))

    # 5. tournament under the oracle on the held-out prompts, and the report
    done = clock.start(5, "tournament (oracle, held-out prompts) + report")
    from nlhf.eval import PolicyEntry, run_tournament
    from nlhf.report import write_report

    base, base_tok = load_policy_model(cfg.model, seed=cfg.seed, device=device)
    entries = [PolicyEntry("reference", base, base_tok, spec=cfg.model)]
    for name in ("RLHF", "IPO", "Nash-MD"):
        r = trained[name]
        entries.append(PolicyEntry(name, r.policy.to(device).eval(), r.tokenizer, spec=str(r.out_dir)))
    result = run_tournament(entries, [p.prompt for p in heldout_prompts], env, tournament_config(cfg),
                            reference=entries[0], progress=True)  # fmt: skip
    res = result.to_dict()
    claims = evaluate_claims(result, cfg.confidence, cfg.seed) if cfg.claims else None
    summary["tournament"] = res
    summary["claims"] = claims
    targets = class_targets(env, mu_vec, cfg) if mu_vec.min() > 0 else None
    summary["targets"] = None if targets is None else {k: v.tolist() for k, v in targets.items()}
    curves = plot_learning_curves({"preference model": run / "pm", "reward model": run / "rm",
                                   "Nash-MD": run / "nash_md", "RLHF": run / "rlhf", "IPO": run / "ipo"},
                                  run / "learning_curves.png")  # fmt: skip
    row = done(f"{len(heldout_prompts)} prompts x {cfg.eval_samples_per_prompt} samples per policy")
    sections = report_sections(cfg, summary, clock.stages, claims)
    if targets is not None:
        sections.insert(
            1, ("Each policy against its exact class-level target", targets_markdown(env, targets, result))
        )
    paths = write_report(result, run, title="nlhf demo: NLHF end to end under a known truth", sections=sections,
                         images={"learning curves": str(curves)} if curves else {})  # fmt: skip
    summary["stages"] = clock.stages
    summary["files"] = {k: str(v) for k, v in paths.items()}
    md = "\n\n".join(["# nlhf demo: NLHF end to end under a known truth", *(f"## {h}\n\n{t}" for h, t in sections),
                      "## Tournament\n\n" + result.to_markdown()]
                     + (["![learning curves](learning_curves.png)"] if curves else []))  # fmt: skip
    (run / "report.md").write_text(md + "\n")
    if cfg.lab:
        from nlhf.demo import run_lab_showcase

        run_lab_showcase(run / "lab", quick=not cfg.claims)
    (run / "summary.json").write_text(json.dumps(_json_safe(summary), indent=2) + "\n")
    del row
    return summary


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
    stage_rows = [f"| {r['stage']} | {r['wall_s']} | {r['cpu_s']} | {r['quiet_estimate_s']} | {r['load_avg']} |"
                  for r in stages]  # fmt: skip
    total = sum(r["wall_s"] for r in stages)
    quiet = sum(r["quiet_estimate_s"] for r in stages)
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
            f"{cfg.lora_r} on the last {cfg.lora_last_layers or 'all'} blocks; oracle: the cyclic rater "
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
            "| stage | wall s | cpu s | quiet-machine estimate s | load avg |\n|---|---|---|---|---|\n"
            + "\n".join(stage_rows)
            + f"\n\nTotal {total:.0f} s wall; quiet-machine estimate "
            f"{quiet:.0f} s (cpu time / {s['threads']} threads, capped by the wall time).",
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


__all__ = ["DemoConfig", "QUICK", "load_demo_config", "run_demo", "evaluate_claims", "label_pairs",
           "split_pairs_by_prompt", "sample_responses", "lora_settings", "pick_prompts"]  # fmt: skip
