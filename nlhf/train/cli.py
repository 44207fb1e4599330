"""``nlhf train FAMILY ...``, ``nlhf train-pm`` and ``nlhf train-rm``: the training commands.

Cheap to import: the trainer modules import no torch until a command runs, so ``nlhf
--help`` stays fast. Every family is a row of :data:`TRAIN_FAMILIES` that names its config
class and its ``run(cfg) -> result`` function by direct reference, the config keys the
sub-command fixes (``nlhf train ipo`` sets ``loss: ipo``; a config file or override that
says otherwise is an error), and which config keys get ``--flag`` options. Every
sub-command also takes ``--config YAML``, ``--resume`` and ``KEY=VALUE`` overrides
(anywhere on the line, also after options), resolved in the order defaults < fixed keys <
YAML < overrides < flags (:func:`nlhf.config.resolve_config`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nlhf.config import resolve_config
from nlhf.train import dno, dpo, fit, inpo, mirror_prox, mpo, nash_md, online_ipo, rlhf, sppo
from nlhf.train.model_card import card_after_command, command_line

# What the flags of a family mean (config key -> help); a family lists the ones it takes.
FLAG_HELP: dict[str, str] = {
    "data": "training pairs: a .jsonl/.json/.parquet/.csv file, a directory or a hub name",
    "eval_data": "evaluation pairs (same formats); optional",
    "model": "policy: smollm2, tiny (random test model), a local directory, a .gguf file or a hub name",
    "out": "run directory (config.yaml, metrics.jsonl, checkpoints, policy/, metrics.json)",
    "prompts": "training prompts: any file or dataset load_prompts reads (prompt-only or preference data)",
    "eval_prompts": "held-out prompts (same formats); optional",
    "judge": "the judge: a saved PM/RM directory (nlhf train-pm / train-rm), hf-reward:PATH_OR_NAME, llm:PATH_OR_NAME or http://HOST:PORT/v1[,model=NAME,...]",
    "reward": "the reward model directory (nlhf train-rm)",
}


@dataclass(frozen=True)
class TrainFamily:
    """One ``nlhf train`` sub-command: its config class, run function and summary line, what it fixes."""

    help: str
    config_class: type  # a frozen dataclass
    run: Callable[[Any], Any]  # run(cfg) -> result
    fixed: Mapping[str, Any] = field(default_factory=dict)  # config keys the sub-command sets
    flags: tuple[str, ...] = ("data", "eval_data", "model", "out")  # config keys with a --flag
    summary: Callable[[Any], str] | None = (
        None  # summary(result) -> the line printed (default: JSON of .summary)
    )
    description: str = ""


_DPO = dict(config_class=dpo.OfflineConfig, run=dpo.run_offline, summary=dpo.summary_line)
_NASH = dict(config_class=nash_md.NashMDConfig, run=nash_md.run_nash_md, summary=nash_md.summary_line,
             flags=("prompts", "eval_prompts", "model", "judge", "out"))  # fmt: skip
_IPO = dict(config_class=online_ipo.OnlineIPOConfig, run=online_ipo.run_online_ipo, summary=online_ipo.summary_line,
            flags=("prompts", "eval_prompts", "model", "judge", "out"))  # fmt: skip
_RLHF = dict(config_class=rlhf.RLHFConfig, run=rlhf.run_rlhf, summary=rlhf.summary_line,
             flags=("prompts", "eval_prompts", "model", "reward", "out"))  # fmt: skip
_SPPO = dict(config_class=sppo.SPPOConfig, run=sppo.run_sppo, summary=sppo.summary_line,
             flags=("prompts", "eval_prompts", "model", "judge", "out"))  # fmt: skip
_INPO = dict(config_class=inpo.INPOConfig, run=inpo.run_inpo, summary=inpo.summary_line,
             flags=("prompts", "eval_prompts", "model", "judge", "out"))  # fmt: skip
_DNO = dict(config_class=dno.DNOConfig, run=dno.run_dno, summary=dno.summary_line,
            flags=("prompts", "eval_prompts", "model", "judge", "out"))  # fmt: skip
_MPO = dict(config_class=mpo.MPOConfig, run=mpo.run_mpo, summary=mpo.summary_line,
            flags=("prompts", "eval_prompts", "model", "judge", "out"))  # fmt: skip
_PROX = dict(config_class=mirror_prox.MirrorProxConfig, run=mirror_prox.run_mirror_prox,
             summary=mirror_prox.summary_line, flags=("prompts", "eval_prompts", "model", "judge", "out"))  # fmt: skip

TRAIN_FAMILIES: dict[str, TrainFamily] = {
    "dpo": TrainFamily(
        help="offline DPO: -log sigmoid(tau h) per pair (THEORY.md Sec. 5)",
        fixed={"loss": "dpo"},
        description="Offline DPO on preference pairs (hard labels; a pair labelled 0 is turned round).",
        **_DPO,
    ),
    "ipo": TrainFamily(
        help="offline IPO: (h - (p - 1/2)/tau)^2 per pair, soft labels honoured (PsiPO Eq. 17)",
        fixed={"loss": "ipo"},
        description="Offline IPO on preference pairs. reduction=sum (default): tau is THEORY.md's KL "
        "strength; reduction=mean: TRL's length-normalised IPO.",
        **_DPO,
    ),
    "cdpo": TrainFamily(
        help="conservative DPO: DPO with label smoothing (label_smoothing=EPS)",
        fixed={"loss": "cdpo"},
        description="Conservative DPO: labels flipped with probability label_smoothing (set it, e.g. "
        "label_smoothing=0.1).",
        **_DPO,
    ),
    "nash-md": TrainFamily(
        help="Nash-MD-PG: y ~ pi against y' ~ the token-level mixture pi^(1-beta) mu^beta (THEORY.md Sec. 4)",
        fixed={"algorithm": "nash_md"},
        description="Nash-MD-PG against the geometric mixture with the reference (mixture_coef=BETA, default "
        "0.125), judged by a preference or reward model (--judge).",
        **_NASH,
    ),
    "self-play": TrainFamily(
        help="SelfPlay: Nash-MD-PG with mixture_coef 0 (the opponent is the policy itself)",
        fixed={"algorithm": "self_play"},
        **_NASH,
    ),
    "best-response": TrainFamily(
        help="BestResponse: Nash-MD-PG with mixture_coef 1 (the opponent is the reference)",
        fixed={"algorithm": "best_response"},
        **_NASH,
    ),
    "nash-ema": TrainFamily(
        help="Nash-EMA-PG: the opponent is the EMA of the policy's parameters (ema_decay)",
        fixed={"algorithm": "nash_ema"},
        **_NASH,
    ),
    "online-ipo": TrainFamily(
        help="online IPO: both responses from the policy, soft labels from the judge (THEORY.md Sec. 6)",
        fixed={"algorithm": "online_ipo"},
        **_IPO,
    ),
    "ipo-md": TrainFamily(
        help="IPO-MD: online IPO on two samples of the geometric mixture (THEORY.md Sec. 6)",
        fixed={"algorithm": "ipo_md"},
        **_IPO,
    ),
    "sppo": TrainFamily(
        help="SPPO: square loss of log(pi/pi_t)(y) onto eta (P(y > pi_t) - 1/2), outer iterations (THEORY.md Sec. 8.1)",
        fixed={"algorithm": "sppo"},
        description="Self-Play Preference Optimization: K responses a prompt from pi_t (the policy at the start of "
        "the iteration, refreshed every steps_per_iteration steps), their win rates against pi_t from the judge.",
        **_SPPO,
    ),
    "inpo": TrainFamily(
        help="INPO: pairwise square loss with KL to mu and to pi_t, outer iterations (THEORY.md Sec. 8.2)",
        fixed={"algorithm": "inpo"},
        description="Iterative Nash Policy Optimization: pairs from pi_t (the policy at the start of the iteration, "
        "refreshed every steps_per_iteration steps) judged by --judge; fixed point the regularised equilibrium.",
        **_INPO,
    ),
    "dno": TrainFamily(
        help="DNO: DPO against pi_t on the best and worst of K responses by win rate, outer iterations (THEORY.md Sec. 8.3)",
        fixed={"algorithm": "dno"},
        description="Direct Nash Optimization: K responses a prompt from pi_t (refreshed every steps_per_iteration "
        "steps), judged pairwise; the pair (best, worst) by estimated win rate kept when its gap is >= margin.",
        **_DNO,
    ),
    "mpo": TrainFamily(
        help="MPO: magnetic mirror descent, the magnet (mu, then the policy) refreshed every magnet_every iterations (THEORY.md Sec. 8.4)",
        fixed={"algorithm": "mpo"},
        description="Magnetic Preference Optimization: INPO's pairwise loss with step eta/(1 + eta tau) and the magnet "
        "in mu's place; the magnet is replaced by the policy every magnet_every iterations (last iterate: Nash).",
        **_MPO,
    ),
    "mirror-prox": TrainFamily(
        help="Nash mirror prox: an extrapolation and an update MMD step from pi_t per iteration (THEORY.md Sec. 8.5)",
        fixed={"algorithm": "mirror_prox"},
        description="Nash mirror prox / extragradient: each iteration's first half regresses onto the MMD step from "
        "pi_t against pi_t, its second half onto the MMD step from pi_t against the extrapolated pi_{t+1/2}.",
        **_PROX,
    ),
    "ppo": TrainFamily(
        help="PPO-clip against a reward model (critic-free: leave-one-out baseline over group_size samples)",
        fixed={"algorithm": "ppo"},
        description="PPO-clip with the KL to the reference in the reward, ppo_epochs steps per batch of "
        "rollouts, advantages from a leave-one-out baseline (no value network). --reward: nlhf train-rm's output.",
        **_RLHF,
    ),
    "rlhf-pg": TrainFamily(
        help="regularised policy gradient (RLOO) against a reward model: E r - tau KL(pi || mu)",
        fixed={"algorithm": "rlhf_pg"},
        **_RLHF,
    ),
}

EPILOG = (
    "Config: defaults < --config YAML < KEY=VALUE overrides < --flags (the sub-command fixes the loss).\n"
    "Examples of overrides: tau=0.1 reduction=mean optim.lr=5e-7 loop.max_steps=200\n"
    "loop.micro_batch_size=4 loop.grad_accum_steps=4 loop.save_every=100 lora.r=8.\n"
    "Memory and speed: dtype=auto|float32|bfloat16|float16 (auto: bfloat16 on CUDA, float32 on CPU)\n"
    "attn_implementation=sdpa|eager|flash_attention_2 gradient_checkpointing=true\n"
    "lora.quantize=4bit|8bit (QLoRA: CUDA + bitsandbytes); dpo|ipo|cdpo: reference=MODEL (default: the policy).\n"
    "Trackers: loop.report_to=tensorboard,wandb,trackio,mlflow or none. Model card: OUT/policy/README.md."
)

FIT_EPILOG = (
    "Config: defaults < --config YAML < KEY=VALUE overrides < --data/--eval-data/--model/--out.\n"
    "Writes OUT/config.yaml, metrics.jsonl, tensorboard/, ckpt-<step>/ (loop.save_every), the model\n"
    "(save_pretrained), metrics.json (eval accuracy, log_loss, ece) and reliability.png.\n"
    "Memory: dtype=auto|float32|bfloat16|float16 (auto: bfloat16 on CUDA) gradient_checkpointing=true.\n"
    "Trackers: loop.report_to=tensorboard,wandb,trackio,mlflow or none. Model card: OUT/README.md."
)


def accept_overrides_anywhere(parser: argparse.ArgumentParser) -> None:
    """Let ``KEY=VALUE`` overrides stand anywhere, also after options (``--data D k=v --out O k2=v2``).

    argparse fills a ``nargs="*"`` positional once, from the first run of positionals; a
    ``KEY=VALUE`` after a later option would be an "unrecognized argument". This parser
    hands every such leftover to ``overrides``, in command-line order.
    """
    parse_known = type(parser).parse_known_args

    def parse_known_args(args: Any = None, namespace: Any = None) -> Any:
        namespace, extras = parse_known(parser, args, namespace)
        rest = []
        for arg in extras:
            if "=" in arg and not arg.startswith("-"):
                namespace.overrides = [*(namespace.overrides or []), arg]
            else:
                rest.append(arg)
        return namespace, rest

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def _runner(name: str) -> Callable[[Any], int]:
    def run(args: Any) -> int:
        family = TRAIN_FAMILIES[name]
        overrides = list(args.overrides or [])
        if args.resume:
            overrides.append("loop.resume=true")
        flags = {key: getattr(args, key, None) for key in family.flags}
        cfg = resolve_config(family.config_class, args.config, overrides, flags, family.fixed)
        result = family.run(cfg)
        if getattr(result, "policy_dir", None) is not None:  # the main process saved a policy: its README.md
            card_after_command(result.out_dir, name, command_line(["train", name], args, family.flags))
        if family.summary is not None:
            line = family.summary(result)
        else:
            line = json.dumps(getattr(result, "summary", {}), default=str)
        if line:
            print(line)
        return 0

    return run


def register_train(subparsers: Any) -> None:
    """Add ``train`` (with one sub-command per row of :data:`TRAIN_FAMILIES`) to an argparse collection."""
    train = subparsers.add_parser(
        "train",
        help="train a policy: " + " | ".join(TRAIN_FAMILIES),
        description="Train a policy from preferences. One sub-command per algorithm family.",
    )
    families = train.add_subparsers(dest="family", metavar="FAMILY")
    train.set_defaults(func=lambda args: (train.print_help(), 2)[1])
    for name, family in TRAIN_FAMILIES.items():
        parser = families.add_parser(
            name,
            help=family.help,
            description=(family.description or family.help),
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.add_argument("--config", help="YAML file with the config's keys")
        for key in family.flags:
            parser.add_argument("--" + key.replace("_", "-"), dest=key, help=FLAG_HELP.get(key, key))
        parser.add_argument(
            "--resume", action="store_true", help="continue from the newest checkpoint in --out"
        )
        parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
        accept_overrides_anywhere(parser)
        parser.set_defaults(func=_runner(name))


def register_fit(subparsers: Any) -> None:
    """Add ``train-pm``, ``train-rm`` and ``train-gpm`` (:mod:`nlhf.train.fit`) to an argparse collection."""
    for kind, name, what in (
        ("pm", "train-pm", "the pairwise preference model P(y > y' | x) (binary cross-entropy on the label)"),
        ("rm", "train-rm", "the Bradley-Terry reward model r(x, y) (the RLHF baseline)"),
        (
            "gpm",
            "train-gpm",
            "the general preference model v(x, y)^T S v(x, y') (one embedding a response; cycles)",
        ),
    ):
        parser = subparsers.add_parser(
            name,
            help=f"train {what.split(' (')[0]}",
            description=f"Train {what}. THEORY.md Sec. 1.",
            epilog=FIT_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        fit.add_arguments(parser)
        accept_overrides_anywhere(parser)
        parser.set_defaults(func=_fit_with_card(kind, name))


def _fit_with_card(kind: str, name: str) -> Callable[[Any], int]:
    """``nlhf train-pm`` / ``train-rm`` (:func:`nlhf.train.fit.command`), then the model card in the run directory."""
    command = fit.command(kind)

    def run(args: Any) -> int:
        code = command(args)
        flags = {key: getattr(args, key) for key in ("data", "eval_data", "model", "out")}
        out = fit.load_fit_config(args.config, list(args.overrides or []), **flags).out
        card_after_command(out, name, command_line([name], args, tuple(flags)))
        return code

    return run


def register(subparsers: Any) -> None:
    """Add ``train-pm``, ``train-rm`` and ``train`` to an argparse collection."""
    register_fit(subparsers)
    register_train(subparsers)


__all__ = [
    "FLAG_HELP",
    "TRAIN_FAMILIES",
    "TrainFamily",
    "accept_overrides_anywhere",
    "register",
    "register_fit",
    "register_train",
    "resolve_config",
]
