"""Configs of the shared training loop: the optimiser and the loop itself.

Both are frozen dataclasses resolved through :mod:`nlhf.config` (YAML plus ``key=value``
overrides; unknown keys and wrong types are rejected there). Range checks live in
``__post_init__`` and name the offending key, so a bad config fails before any model loads.
Every trainer (``preference_model.py``, ``dpo.py``, ``nash_md.py``, ``online_ipo.py``,
``rlhf.py``) nests these two. :class:`PromptRunConfig` holds the fields of the trainers fed
with prompts (they sample their own responses); :func:`check_required` and
:func:`check_prompt_settings` are checks the trainers' own configs share.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from nlhf.config import check
from nlhf.models.lora import LoraSettings
from nlhf.sampling.config import SamplingConfig


@dataclass(frozen=True)
class OptimConfig:
    """AdamW plus a learning-rate schedule.

    The schedule multiplies ``lr`` by a factor that depends on the number ``s`` of
    optimiser updates already made (see :func:`nlhf.train.loop.lr_factor`):
    a linear warm-up ``(s + 1) / (warmup_steps + 1)`` for ``s < warmup_steps``, then
    ``cosine`` or ``linear`` decay from 1 to ``min_lr_ratio`` over the remaining steps, or
    ``constant``.
    """

    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    max_grad_norm: float = 1.0  # clip the global gradient norm to this; 0 disables clipping
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0  # the decayed lr ends at lr * min_lr_ratio

    def __post_init__(self) -> None:
        check(self.lr > 0, "optim.lr", f"must be > 0, got {self.lr}")
        check(self.lr < float("inf"), "optim.lr", f"must be finite, got {self.lr}")
        check(self.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {self.weight_decay}")
        check(len(self.betas) == 2, "optim.betas", f"must have two values, got {self.betas}")
        check(all(0.0 <= b < 1.0 for b in self.betas), "optim.betas", f"must be in [0, 1), got {self.betas}")
        check(0 < self.eps < float("inf"), "optim.eps", f"must be > 0 and finite, got {self.eps}")
        check(self.max_grad_norm >= 0, "optim.max_grad_norm", f"must be >= 0, got {self.max_grad_norm}")
        check(self.warmup_steps >= 0, "optim.warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        check(
            0.0 <= self.min_lr_ratio <= 1.0,
            "optim.min_lr_ratio",
            f"must be in [0, 1], got {self.min_lr_ratio}",
        )


@dataclass(frozen=True)
class LoopConfig:
    """What the loop does around the step function: batching, evaluation, checkpoints, logs.

    One optimiser step consumes a *global batch* of
    ``micro_batch_size * grad_accum_steps * num_processes`` examples, taken in order from
    a stream of seeded permutations of the training set (epoch ``e`` uses the permutation
    drawn from ``(seed, e)``); the stream position is saved in every checkpoint.
    Give the length of the run either as ``max_steps`` or as ``epochs`` (then
    ``max_steps = floor(epochs * len(data) / global_batch)``), not both.
    """

    seed: int = 0
    max_steps: int | None = None
    epochs: float | None = None  # used when max_steps is null; default 1 epoch
    micro_batch_size: int = 8
    grad_accum_steps: int = 1
    eval_batch_size: int | None = None  # defaults to micro_batch_size
    eval_every: int = 0  # evaluate every N steps (0: only at the end, when eval_at_end)
    eval_at_end: bool = True
    save_every: int = 0  # checkpoint every N steps and at the end (0: no checkpoints)
    keep_last: int = 2  # checkpoints kept on disk
    log_every: int = 10  # console / JSONL / TensorBoard every N steps
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"  # only applied when a GPU is present
    device: Literal["auto", "cpu", "cuda"] = "auto"
    out_dir: str = ""
    resume: bool = False  # continue from the latest complete checkpoint in out_dir
    overwrite: bool = False  # delete old checkpoints in out_dir instead of refusing to start
    max_nonfinite_in_a_row: int = 5  # stop after this many skipped (NaN/inf) steps in a row
    min_free_disk_mb: int = 100  # refuse to start with less free space than this in out_dir
    progress: bool = True  # tqdm progress bar
    report_to: str = "tensorboard"  # comma list of tensorboard, wandb, trackio, mlflow, or none
    tensorboard: bool | None = None  # old key: false drops the default tensorboard (prefer report_to)

    def __post_init__(self) -> None:
        check(
            self.max_steps is None or self.max_steps > 0,
            "loop.max_steps",
            f"must be > 0, got {self.max_steps}",
        )
        check(self.epochs is None or self.epochs > 0, "loop.epochs", f"must be > 0, got {self.epochs}")
        check(
            self.epochs is None or self.epochs < float("inf"),
            "loop.epochs",
            f"must be finite, got {self.epochs}",
        )
        check(
            0 <= self.seed < 2**32,
            "loop.seed",
            f"must be in [0, 2**32) (numpy's seed range), got {self.seed}",
        )
        check(
            self.max_steps is None or self.epochs is None,
            "loop.epochs",
            "give either loop.max_steps or loop.epochs, not both",
        )
        check(self.micro_batch_size > 0, "loop.micro_batch_size", f"must be > 0, got {self.micro_batch_size}")
        check(self.grad_accum_steps > 0, "loop.grad_accum_steps", f"must be > 0, got {self.grad_accum_steps}")
        check(
            self.eval_batch_size is None or self.eval_batch_size > 0,
            "loop.eval_batch_size",
            f"must be > 0, got {self.eval_batch_size}",
        )
        check(self.eval_every >= 0, "loop.eval_every", f"must be >= 0, got {self.eval_every}")
        check(self.save_every >= 0, "loop.save_every", f"must be >= 0, got {self.save_every}")
        check(self.keep_last >= 1, "loop.keep_last", f"must be >= 1, got {self.keep_last}")
        check(self.log_every > 0, "loop.log_every", f"must be > 0, got {self.log_every}")
        check(
            self.max_nonfinite_in_a_row >= 1,
            "loop.max_nonfinite_in_a_row",
            f"must be >= 1, got {self.max_nonfinite_in_a_row}",
        )
        check(
            self.min_free_disk_mb >= 0, "loop.min_free_disk_mb", f"must be >= 0, got {self.min_free_disk_mb}"
        )
        check(not (self.resume and self.overwrite), "loop.overwrite", "cannot be combined with loop.resume")
        _ = self.trackers  # loop.report_to / loop.tensorboard checked now, before any model loads

    @property
    def eval_micro_batch_size(self) -> int:
        return self.eval_batch_size or self.micro_batch_size

    @property
    def trackers(self) -> tuple[str, ...]:
        """The experiment trackers of ``report_to`` (with the old ``tensorboard`` key applied): :func:`parse_report_to`."""
        return parse_report_to(self.report_to, self.tensorboard)


TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio", "mlflow": "mlflow"}
"""``loop.report_to`` names -> the Python package each needs (``pip install`` name: the same; mlflow-skinny also does)."""


def parse_report_to(report_to: str, tensorboard: bool | None = None) -> tuple[str, ...]:
    """``"tensorboard,wandb"`` -> ``("tensorboard", "wandb")``; ``"none"`` -> ``()``. ConfigError naming the key for an
    unknown name, ``none`` beside another name, a tracker whose package is not installed, or an old ``loop.tensorboard``
    that contradicts ``loop.report_to`` (``false`` only drops the default ``report_to=tensorboard``)."""
    import importlib.util

    names = [n.strip() for n in report_to.split(",") if n.strip()]
    for name in names:
        check(name in (*TRACKER_PACKAGES, "none"), "loop.report_to",
              f"unknown tracker {name!r} (one or more of {', '.join(TRACKER_PACKAGES)}, or none)")  # fmt: skip
    check(bool(names), "loop.report_to", "empty (say none for no tracker)")
    check(
        "none" not in names or len(names) == 1,
        "loop.report_to",
        f"none cannot be combined with others: {report_to!r}",
    )
    trackers = tuple(dict.fromkeys(n for n in names if n != "none"))
    if tensorboard is False:
        check(trackers in (("tensorboard",), ()) or "tensorboard" not in trackers, "loop.tensorboard",
              f"false contradicts loop.report_to={report_to!r}; drop loop.tensorboard and edit loop.report_to")  # fmt: skip
        trackers = tuple(n for n in trackers if n != "tensorboard")
    elif tensorboard is True:
        check("tensorboard" in trackers, "loop.tensorboard",
              f"true contradicts loop.report_to={report_to!r}; drop loop.tensorboard and edit loop.report_to")  # fmt: skip
    for name in trackers:
        package = TRACKER_PACKAGES[name]
        check(importlib.util.find_spec(package) is not None, "loop.report_to",
              f"{name} needs the {package} package, which is not installed (pip install {package})")  # fmt: skip
    return trackers


def check_required(cfg: Any, **hints: str | None) -> None:
    """``<key>: required (<hint>)`` (a ConfigError) for the first key of ``hints`` whose field ``cfg`` leaves empty.

    The trainers' ``check_complete`` (called before any data or model loads); keys are checked
    in the order given, and a key whose hint is None is not checked (a value passed in Python instead).
    """
    for key, hint in hints.items():
        if hint is not None:
            check(bool(getattr(cfg, key)), key, f"required ({hint})")


def check_prompt_settings(cfg: Any, batch_size_key: str) -> None:
    """Range checks of the prompt-fed trainers' configs (``NashMDConfig``, ``OnlineIPOConfig``, ``RLHFConfig``), in this order.

    ``limit`` and ``eval_limit`` > 0 (or None), ``max_prompt_tokens`` >= 1 (or None), the judge's
    or reward model's batch size ``batch_size_key`` >= 1, and ``loop.out_dir`` empty or ``out``.
    """
    check(cfg.limit is None or cfg.limit > 0, "limit", f"must be > 0, got {cfg.limit}")
    check(cfg.eval_limit is None or cfg.eval_limit > 0, "eval_limit", f"must be > 0, got {cfg.eval_limit}")
    check(cfg.max_prompt_tokens is None or cfg.max_prompt_tokens >= 1, "max_prompt_tokens",
          f"must be >= 1, got {cfg.max_prompt_tokens}")  # fmt: skip
    batch_size = getattr(cfg, batch_size_key)
    check(batch_size >= 1, batch_size_key, f"must be >= 1, got {batch_size}")
    check(not cfg.loop.out_dir or cfg.loop.out_dir == cfg.out, "loop.out_dir", "set `out` (--out) instead")


@dataclass(frozen=True)
class PromptRunConfig:
    """The fields every prompt-fed trainer reads (Nash-MD, online IPO, RLHF); their configs extend it.

    ``model``: ``smollm2``, ``tiny`` (a random test model seeded by ``loop.seed``), a local
    directory, a GGUF file or a hub name. ``sampling.seed`` is not used: the rows' random
    streams derive from ``loop.seed`` (:mod:`nlhf.sampling.streams`).
    """

    prompts: str = ""  # --prompts: file, directory or hub name (nlhf.data.load_prompts)
    eval_prompts: str | None = None  # --eval-prompts
    model: str = "smollm2"  # --model
    out: str = ""  # --out: the run directory
    prompt_format: str | None = None  # nlhf.data.load_prompts format; None: detected
    split: str | None = None
    eval_split: str | None = None
    skip_invalid: bool = False
    limit: int | None = None  # use at most this many training prompts
    eval_limit: int | None = None
    max_prompt_tokens: int | None = 512  # prompts cut from the left
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_new_tokens=64))
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on CUDA, else fp32
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"  # from_pretrained's kernel
    gradient_checkpointing: bool = False  # recompute the policy's activations in backward (same gradients)
    lora: LoraSettings | None = None  # e.g. lora.r=8 (reference: the base with the adapter disabled)
    merge_adapter: bool = True
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-6, warmup_steps=0))
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(micro_batch_size=8, log_every=10))

    def check_run_complete(self, scorer_key: str, scorer_hint: str | None, need_prompts: bool = True) -> None:
        """The fields without a usable default, in this order: ``prompts`` (when ``need_prompts``), the
        scorer's field ``scorer_key`` (``judge`` or ``reward``; not checked when ``scorer_hint`` is None: an
        object passed in Python instead), ``out``, ``model``. Called before any data or model loads."""
        check_required(self, prompts="--prompts FILE" if need_prompts else None, **{scorer_key: scorer_hint},
                       out="--out DIR", model="--model smollm2|tiny|PATH")  # fmt: skip


JUDGE_HINT = "--judge DIR|hf-reward:M|llm:M|http://HOST:PORT/v1: a model saved by nlhf train-pm or train-rm, a reward model, a causal LM, or an OpenAI-compatible server"  # the judge trainers' ``judge`` field
