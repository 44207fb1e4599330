"""Every trainer of ``nlhf.train`` for a few steps on a tiny random model: the runs the distributed,
resume and GPU smoke checks share (imported by ``train_ddp_script.py``, ``train_resume_all_script.py``
and ``train_gpu_smoke.py``; not a test module).

:func:`run_trainer` runs one of :data:`TRAINERS` through its public entry point
(``run_fit``, ``run_offline``, ``run_nash_md`` / ``run_online_ipo``, ``run_rlhf``; ``toy`` is the bare loop on
``train_toy``), with

* ``sgd=True``: plain SGD (lr x the gradient: a wrong normaliser shows in the parameters,
  which AdamW's scale invariance would hide), else the trainers' default fused AdamW with
  warm-up, cosine decay, weight decay and clipping;
* ``negative="rank_means"``: every micro-batch returns its own token-weighted MEAN loss (and
  metrics) with weight 1, so the loop's global mean becomes a mean of micro-batch / rank
  means: the bug the distributed test must catch; ``negative="batch_seed"``: the online
  trainers draw from one ``torch.Generator`` per micro-batch (the old scheme) instead of
  one stream per prompt row;
* ``kill_at=k``: SIGKILL the process in the middle of optimiser step k (after its first
  micro-batch's forward), between two checkpoints.

It returns the final trainable parameters (CPU tensors) and the train / eval metrics.

The in-process crash-and-resume tests (``test_offline_resume_cli.py``,
``test_online_resume_cli.py``) share :class:`Crash`, :func:`crashing_step`,
:func:`full_then_crashed` and :func:`train_losses`.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

FIT = ("pm", "rm")
ONLINE = ("nash_md", "self_play", "best_response", "nash_ema", "online_ipo", "ipo_md")
RLHF = ("ppo", "rlhf_pg")
TRAINERS = ("toy", *FIT, "dpo", "ipo", *ONLINE, *RLHF)

# Prompts and responses of unequal lengths, so the shards of the processes hold unequal numbers of tokens.
PROMPTS = [
    "Hi",
    "What is 2 + 2?",
    "Name a colour",
    "Say yes",
    "Count to three",
    "?",
    "Capital of France?",
    "Why",
]
PAIRS = [
    ("Hi", "Hello there, how are you today?", "No."),
    ("What is 2 + 2?", "4", "It is five, or maybe twenty-two"),
    ("Name a colour", "Blue", "I will not name one"),
    ("Say yes", "yes", "n"),
    ("Translate 'chat' to English", "cat", "The word chat is French for a conversation"),
    ("Count to three", "1, 2, 3", "one"),
    ("?", "A question mark with nothing else.", "?"),
    ("Capital of France?", "Paris", "Lyon, I believe, or Marseille"),
]
N_EVAL = 5  # odd: the processes' eval shards differ in size (3 and 2)


def shorter_is_better(prompt: Any, first: str, second: str) -> float:
    """A programmatic judge: P(first > second) = 1 if first is shorter, 0 if longer, 1/2 if as long."""
    return 0.5 if len(first) == len(second) else float(len(first) < len(second))


def minus_length(prompts: Any, responses: Any) -> torch.Tensor:
    """A programmatic reward: shorter is better."""
    return torch.tensor([-len(r) / 8.0 for r in responses])


def eos_prone_tiny(seed: int = 0) -> tuple[Any, Any]:
    """The tiny Llama with a bias of +3.5 on the EOS logit: P(EOS) ~ 0.11 a token, so sampled
    responses end at different lengths (the random model alone almost never emits EOS)."""
    from nlhf.models.tiny import tiny_causal_lm, tiny_tokenizer

    tok = tiny_tokenizer()
    model = tiny_causal_lm(tokenizer=tok, seed=seed)
    head = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(model.lm_head.weight)
        head.bias.zero_()
        head.bias[tok.eos_token_id] = 3.5
    model.lm_head = head
    return model, tok


def counting(judge_fn: Any, record: dict[str, Any]) -> Any:
    """A batched judge from a per-example one that records the size of each call in ``record["judge_rows"]``."""

    def batched(prompts: Any, firsts: Any, seconds: Any) -> list[float]:
        record.setdefault("judge_rows", []).append(len(prompts))
        return [judge_fn(p, a, b) for p, a, b in zip(prompts, firsts, seconds)]

    return batched


def prepare(root: str | Path) -> Path:
    """Files the preference / reward model runs read: a tiny Llama backbone directory and pair files."""
    from nlhf.models.tiny import tiny_causal_lm, tiny_tokenizer

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tok = tiny_tokenizer()
    lm = tiny_causal_lm(tokenizer=tok, seed=0)
    lm.model.save_pretrained(root / "backbone")
    tok.save_pretrained(root / "backbone")
    rows = [{"prompt": p, "chosen": a, "rejected": b} for p, a, b in PAIRS]
    (root / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "eval_pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:N_EVAL]))
    return root


# ----------------------------------------------------------------------------- step wrappers


def _tokens(batch: Any, out: Any) -> torch.Tensor:
    """Response tokens behind each example of a micro-batch (B,): what a per-token mean would weight."""
    if "length" in out.metrics:  # online / RLHF: response length (EOS included)
        return out.metrics["length"][0].float()
    if isinstance(batch, dict) and "completion_mask" in batch:  # offline: both completions of a pair
        rows = batch["completion_mask"].sum(dim=1).float()  # (2B,)
        B = batch["labels"].shape[0]
        return rows[:B] + rows[B:]
    if isinstance(batch, dict) and "labels" in batch:  # preference / reward model: both sequences of a pair
        rows = batch["attention_mask"].sum(dim=1).float()  # (2B,)
        B = batch["labels"].shape[0]
        return rows[:B] + rows[B:]
    return out.weights.float()  # toy: the weights are the tokens already


def rank_mean_step(step_fn: Any) -> Any:
    """WRONG on purpose: each micro-batch returns its token-weighted mean loss and metrics with weight 1.

    The loop then divides the sum of micro-batch means by the number of micro-batches: a
    mean of micro-batch (and rank) means, which weighs a shard of short responses like a
    shard of long ones. 1 process x 2b and 2 processes x b then disagree.
    """
    from nlhf.train.loop import StepOutput

    def step(model: Any, batch: Any, ctx: Any) -> Any:
        out = step_fn(model, batch, ctx)
        tokens = _tokens(batch, out).to(out.losses.device)  # (B,)
        one = torch.ones(1, device=out.losses.device)
        if not bool((out.weights == 1).all()):  # token-summed losses (toy): the micro-batch's token mean
            loss = out.losses.sum() / out.weights.sum()
        else:
            loss = (out.losses * tokens).sum() / tokens.sum()
        metrics = {
            k: ((v * tokens.to(v.device)).sum().reshape(1) / tokens.sum(), one)
            for k, (v, _) in out.metrics.items()
        }
        return StepOutput(losses=loss.reshape(1), weights=one, metrics=metrics)

    return step


def killing_step(step_fn: Any, kill_at: int) -> Any:
    """SIGKILL this process in the middle of optimiser step ``kill_at`` (after micro-batch 0's forward)."""

    def step(model: Any, batch: Any, ctx: Any) -> Any:
        out = step_fn(model, batch, ctx)
        if ctx.step == kill_at and ctx.micro_step == 0:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    return step


class Crash(RuntimeError):
    """What :func:`crashing_step`'s step raises."""


def crashing_step(module: Any, at_step: int) -> Any:
    """``module.make_step`` whose step raises :class:`Crash` in the middle of optimiser step ``at_step``
    (at its second micro-batch, so the run needs ``grad_accum_steps >= 2``)."""
    real = module.make_step

    def factory(*args: Any, **kwargs: Any) -> Any:
        step_fn = real(*args, **kwargs)

        def step(model: Any, batch: Any, ctx: Any) -> Any:
            if ctx.step == at_step and ctx.micro_step == 1:
                raise Crash(f"killed in step {at_step}")
            return step_fn(model, batch, ctx)

        return step

    return factory


def full_then_crashed(monkeypatch: Any, module: Any, run: Any, at_step: int = 5) -> Any:
    """``run("full")``, then ``run("crashed")`` with ``module.make_step`` crashing in step ``at_step``
    (:func:`crashing_step`; the crash must happen). Returns the full run's result."""
    import pytest

    full = run("full")
    with monkeypatch.context() as m:
        m.setattr(module, "make_step", crashing_step(module, at_step))
        with pytest.raises(Crash):
            run("crashed")
    return full


def train_losses(out: Path) -> list[float]:
    """The train ``loss`` of every logged step in ``out/metrics.jsonl``."""
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if r["split"] == "train"]


class _Patches:
    """Module attributes replaced for one run, restored after."""

    def __init__(self) -> None:
        self.saved: list[tuple[Any, str, Any]] = []

    def set(self, obj: Any, name: str, value: Any) -> None:
        self.saved.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)

    def undo(self) -> None:
        for obj, name, value in reversed(self.saved):
            setattr(obj, name, value)
        self.saved.clear()


# ----------------------------------------------------------------------------- one run


def run_trainer(
    name: str,
    root: str | Path,
    out: str | Path,
    *,
    micro: int,
    accum: int = 1,
    max_steps: int = 2,
    save_every: int = 0,
    resume: bool = False,
    sgd: bool = True,
    negative: str | None = None,
    kill_at: int | None = None,
    mixed_precision: str = "no",
    device: str = "auto",
) -> dict[str, Any]:
    """Train ``name`` and return ``{"params", "train", "eval", "processes", "loop"}`` (see the module docstring)."""
    from nlhf.sampling import SamplingConfig
    from nlhf.train import loop as loop_mod
    from nlhf.train.config import LoopConfig, OptimConfig

    if name not in TRAINERS:
        raise ValueError(f"unknown trainer {name!r}; one of {TRAINERS}")
    patches = _Patches()
    record: dict[str, Any] = {}
    base_loop = loop_mod.TrainLoop

    class RecordingLoop(base_loop):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if negative == "rank_means":
                self.step_fn = rank_mean_step(self.step_fn)
            if kill_at is not None:
                self.step_fn = killing_step(self.step_fn, kill_at)
            record["loop"] = self
            model = self.accelerator.unwrap_model(self.model)
            record["initial"] = {n: p.detach().float().cpu().clone() for n, p in model.named_parameters()
                                 if p.requires_grad}  # fmt: skip

    lr = {"toy": 0.1, "pm": 0.5, "rm": 0.5}.get(name, 0.05)
    if sgd:

        def sgd_optimizer(model: Any, cfg: Any = None, fused: Any = None) -> Any:
            return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)

        patches.set(loop_mod, "make_optimizer", sgd_optimizer)
        optim = OptimConfig(lr=lr, max_grad_norm=0.0, schedule="constant")
    else:
        optim = OptimConfig(lr=3e-3, warmup_steps=1, schedule="cosine", weight_decay=0.01, max_grad_norm=1.0)
    patches.set(loop_mod, "TrainLoop", RecordingLoop)
    loop = LoopConfig(
        max_steps=max_steps, micro_batch_size=micro, grad_accum_steps=accum, save_every=save_every, keep_last=2,
        log_every=1, resume=resume, mixed_precision=mixed_precision, device=device, progress=False,
        tensorboard=False, min_free_disk_mb=1, out_dir=str(out) if name == "toy" else "",
    )  # fmt: skip
    root = Path(root)
    try:
        if name == "toy":
            result = _run_toy(loop, optim)
        elif name in FIT:
            from nlhf.train.fit import FitConfig, run_fit

            cfg = FitConfig(data=str(root / "pairs.jsonl"), eval_data=str(root / "eval_pairs.jsonl"),
                            model=str(root / "backbone"), out=str(out), optim=optim, loop=loop)  # fmt: skip
            run_fit(name, cfg)
            result = None
        elif name in ("dpo", "ipo"):
            from nlhf.data import PreferenceExample
            from nlhf.models.tiny import tiny_causal_lm, tiny_tokenizer
            from nlhf.train.dpo import OfflineConfig, run_offline

            pairs = [PreferenceExample(p, a, b) for p, a, b in PAIRS]
            cfg = OfflineConfig(loss=name, tau=0.5, out=str(out), optim=optim, loop=loop)
            tok = tiny_tokenizer()
            result = run_offline(cfg, model=tiny_causal_lm(tokenizer=tok, seed=0), tokenizer=tok,
                                 train_examples=pairs, eval_examples=pairs[:N_EVAL])  # fmt: skip
        elif name in ONLINE:
            from nlhf.judges import CallableJudge
            from nlhf.sampling import streams
            from nlhf.train import nash_md, online_ipo

            if negative == "batch_seed":
                from nlhf.sampling.decode import make_generator

                patches.set(
                    streams,
                    "row_generator",
                    lambda seed, ctx, dev: make_generator(seed + ctx.positions[0], dev),
                )
            ipo = name in online_ipo.ONLINE_IPO_ALGORITHMS
            config_class, run = (online_ipo.OnlineIPOConfig, online_ipo.run_online_ipo) if ipo else (
                nash_md.NashMDConfig, nash_md.run_nash_md)  # fmt: skip
            cfg = config_class(algorithm=name, tau=0.1, **({} if ipo else {"ema_decay": 0.5}), out=str(out),
                               sampling=SamplingConfig(max_new_tokens=8), optim=optim, loop=loop)  # fmt: skip
            model, tok = eos_prone_tiny()
            judge = CallableJudge(counting(shorter_is_better, record), batched=True, name="shorter_is_better")
            result = run(cfg, model=model, tokenizer=tok, judge=judge,
                                       train_prompts=PROMPTS, eval_prompts=PROMPTS[:N_EVAL])  # fmt: skip
        else:
            from nlhf.train import rlhf

            if negative == "batch_seed":
                from nlhf.sampling import streams
                from nlhf.sampling.decode import make_generator

                patches.set(
                    streams,
                    "row_generator",
                    lambda seed, ctx, dev: make_generator(seed + ctx.positions[0], dev),
                )
            cfg = rlhf.RLHFConfig(algorithm=name, tau=0.1, group_size=2, ppo_epochs=3 if name == "ppo" else None,
                                  out=str(out), sampling=SamplingConfig(max_new_tokens=8), optim=optim, loop=loop)  # fmt: skip
            model, tok = eos_prone_tiny()
            result = rlhf.run_rlhf(cfg, model=model, tokenizer=tok,
                                   reward_fn=minus_length, train_prompts=PROMPTS, eval_prompts=PROMPTS[:N_EVAL])  # fmt: skip
    finally:
        patches.undo()
    trained = record["loop"]
    acc = trained.accelerator
    if acc.distributed_type.name == "FSDP":
        state = acc.get_state_dict(trained.model)  # collective: the full (unsharded) weights
        params = {n: t.detach().float().cpu().clone() for n, t in (state or {}).items()}
    else:
        model = acc.unwrap_model(trained.model)
        params = {n: p.detach().float().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
    out_record = {
        "params": params,
        "train": dict(trained.train_metrics),
        "eval": dict(trained.eval_metrics),
        "processes": trained.world,
        "updates": trained.updates,
        "steps": trained.step,
    }
    common = [
        n for n in params if n in record.get("initial", {}) and params[n].shape == record["initial"][n].shape
    ]
    if common:  # (under FSDP the names or shapes of the wrapped parameters may differ: no update then)
        out_record["update"] = max(float((params[n] - record["initial"][n]).abs().max()) for n in common)
    out_record["judge_rows"] = record.get("judge_rows", [])
    if result is not None and getattr(result, "opponent", None) is not None:
        out_record["ema"] = {n: t.float().clone() for n, t in result.opponent.state_dict()["params"].items()}
    return out_record


def _run_toy(loop: Any, optim: Any) -> None:
    from train_toy import ToyModel, collate, make_data, token_sq_error_step

    from nlhf.train import loop as loop_mod

    loop_mod.TrainLoop(loop, optim, ToyModel(seed=4), make_data(24, seed=2), collate, token_sq_error_step,
                       eval_data=make_data(7, seed=3)).run()  # fmt: skip
    return None
