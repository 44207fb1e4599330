"""The Python API: one function per training family, and the tournament (``from nlhf import train_nash_md``).

Every ``train_*`` function takes its config as a config object, a plain dict, keyword
arguments, or a config/dict plus keyword overrides, with nested sections as plain dicts::

    import nlhf

    result = nlhf.train_nash_md(
        {"prompts": "prompts.jsonl", "judge": "llm:smollm2", "model": "smollm2", "out": "runs/nash"},
        loop={"max_steps": 100}, lora={"r": 8},
        callbacks=[lambda step, metrics: metrics["loss"] < 0.01],  # True stops after that step
    )
    result.policy_dir  # runs/nash/policy, with its README.md model card

The config is resolved by :func:`nlhf.config.build_config` (unknown keys and wrong types are
errors naming the key, before anything loads), the keys a family fixes are checked as on the
command line (``train_ipo`` is offline DPO with ``loss="ipo"``), and the family's run
function runs (:data:`nlhf.train.cli.TRAIN_FAMILIES`). Keyword arguments that are not config
keys but parameters of the run function (``train_prompts``, ``eval_prompts``,
``train_examples``, ``reward_fn``, ``reference_model``, ``optimizer_fn``, ``tokenizer``) are
handed to it; ``model`` and ``judge`` are config keys when they are strings and Python objects
(a loaded model, any :class:`nlhf.judges.Judge`) otherwise. ``callbacks``: ``on_step(step,
metrics) -> bool`` functions (:mod:`nlhf.train.callbacks`). After a run that saved a model,
its ``README.md`` model card is written (:mod:`nlhf.train.model_card`).

Each function returns what the run function returns: a :class:`nlhf.train.run.RunResult`
for the policy trainers, ``metrics.json``'s dict for ``train_preference_model``,
``train_reward_model`` and ``train_general_preference_model``; :func:`tournament` returns a :class:`nlhf.eval.TournamentResult`.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from nlhf.config import ConfigError, build_config, merge
from nlhf.train.callbacks import step_callbacks
from nlhf.train.cli import TRAIN_FAMILIES
from nlhf.train.fit import FitConfig, run_fit
from nlhf.train.model_card import card_after_command

FIT_FAMILIES = {"train-pm": "pm", "train-rm": "rm", "train-gpm": "gpm"}
# Run-function arguments -> the config key whose value they replace (the model card says "passed in Python").
OBJECT_KEYS = {"model": "model", "judge": "judge", "train_examples": "data", "eval_examples": "eval_data",
               "train_prompts": "prompts", "eval_prompts": "eval_prompts", "reward_fn": "reward"}  # fmt: skip


def _family(name: str) -> tuple[type, Callable[..., Any], dict[str, Any]]:
    """``(config_class, run, fixed)`` of an ``nlhf train`` sub-command, ``train-pm`` or ``train-rm``."""
    if name in FIT_FAMILIES:
        kind = FIT_FAMILIES[name]
        return FitConfig, lambda cfg: run_fit(kind, cfg), {}
    if name not in TRAIN_FAMILIES:
        known = ", ".join([*TRAIN_FAMILIES, *FIT_FAMILIES])
        raise ValueError(f"unknown training family {name!r} (one of {known})")
    family = TRAIN_FAMILIES[name]
    return family.config_class, family.run, dict(family.fixed)


def _split_kwargs(
    config_class: type, run: Callable[..., Any], kwargs: Mapping[str, Any]
) -> tuple[dict, dict]:
    """``(config keys, run-function objects)`` of the keyword arguments (module docstring)."""
    fields = {f.name for f in dataclasses.fields(config_class) if f.init}
    params = set(list(inspect.signature(run).parameters)[1:])  # after cfg
    config_kw, objects = {}, {}
    for key, value in kwargs.items():
        in_config, in_run = key in fields, key in params
        if in_run and (not in_config or not (value is None or isinstance(value, str))):
            objects[key] = value
        else:
            config_kw[key] = value  # unknown keys: build_config's error names them
    return config_kw, objects


def train(family: str, config: Any = None, /, *, callbacks: Any = None, **kwargs: Any) -> Any:
    """Train one family (an ``nlhf train`` sub-command: ``"dpo"``, ``"nash-md"``, ...; or ``"train-pm"`` /
    ``"train-rm"``) from a config object, a dict and/or keyword arguments; see the module docstring."""
    config_class, run, fixed = _family(family)
    config_kw, objects = _split_kwargs(config_class, run, kwargs)
    if config is None or isinstance(config, Mapping):
        config = merge(fixed, dict(config or {}))  # the fixed keys as defaults, checked below
    cfg = build_config(config_class, config, **config_kw)
    for key, value in fixed.items():
        if getattr(cfg, key) != value:
            raise ConfigError(
                f"{key}: {family} sets {key}={value!r}, but the config says {key}={getattr(cfg, key)!r}"
            )
    with step_callbacks(callbacks):
        result = run(cfg, **objects)
    saved = getattr(result, "policy_dir", None) is not None or (family in FIT_FAMILIES and bool(result))
    if saved:
        passed = tuple(OBJECT_KEYS[k] for k in objects if k in OBJECT_KEYS and objects[k] is not None)
        card_after_command(cfg.out, family, f"nlhf {_words(family)} --config {cfg.out}/config.yaml", passed)
    return result


def _words(family: str) -> str:
    return family if family in FIT_FAMILIES else f"train {family}"


def _trainer(family: str, doc: str) -> Callable[..., Any]:
    def trainer(config: Any = None, /, *, callbacks: Any = None, **kwargs: Any) -> Any:
        return train(family, config, callbacks=callbacks, **kwargs)

    trainer.__doc__ = f"{doc} (``nlhf {_words(family)}``); config, callbacks and keywords: :mod:`nlhf.api`."
    return trainer


def _open_trainer(config_class_family: str, default_family: str, doc: str) -> Callable[..., Any]:
    """A trainer whose ``algorithm`` key picks the sub-command (``train_nash_md(algorithm="nash_ema")``)."""

    def trainer(config: Any = None, /, *, callbacks: Any = None, **kwargs: Any) -> Any:
        algorithm = kwargs.get("algorithm")
        if algorithm is None:
            algorithm = (
                config.get("algorithm") if isinstance(config, Mapping) else getattr(config, "algorithm", None)
            )
        family = str(algorithm).replace("_", "-") if algorithm else default_family
        config_class = TRAIN_FAMILIES[default_family].config_class
        if family not in TRAIN_FAMILIES or TRAIN_FAMILIES[family].config_class is not config_class:
            raise ConfigError(f"algorithm: {algorithm!r} is not an algorithm of {config_class_family}")
        return train(family, config, callbacks=callbacks, **kwargs)

    trainer.__doc__ = (
        f"{doc}; the ``algorithm`` key picks the variant. Config, callbacks and keywords: :mod:`nlhf.api`."
    )
    return trainer


train_dpo = _trainer("dpo", "Offline DPO on preference pairs")
train_ipo = _trainer("ipo", "Offline IPO on preference pairs (offline DPO with loss ipo)")
train_nash_md = _open_trainer(
    "train_nash_md", "nash-md", "Nash-MD-PG (nash_md, self_play, best_response, nash_ema)"
)
train_online_ipo = _open_trainer("train_online_ipo", "online-ipo", "Online IPO (online_ipo, ipo_md)")
train_rlhf = _open_trainer("train_rlhf", "ppo", "RLHF against a reward model (ppo, rlhf_pg)")
train_sppo = _trainer("sppo", "SPPO: self-play preference optimisation")
train_inpo = _trainer("inpo", "INPO: iterative Nash policy optimisation")
train_dno = _trainer(
    "dno", "DNO: direct Nash optimisation (DPO on the judge's best and worst of pi_t's responses)"
)
train_mpo = _trainer("mpo", "MPO: magnetic preference optimisation (magnetic mirror descent)")
train_mirror_prox = _trainer("mirror-prox", "Nash mirror prox: an extragradient step per iteration")
train_preference_model = _trainer("train-pm", "The pairwise preference model P(y > y' | x)")
train_reward_model = _trainer("train-rm", "The Bradley-Terry reward model r(x, y)")
train_general_preference_model = _trainer(
    "train-gpm", "The general preference model sigmoid(v(x, y)^T S v(x, y')), S skew-symmetric"
)
for _name in ("train_dpo", "train_ipo", "train_nash_md", "train_online_ipo", "train_rlhf", "train_sppo",
              "train_inpo", "train_dno", "train_mpo", "train_mirror_prox", "train_preference_model",
              "train_reward_model", "train_general_preference_model"):  # fmt: skip
    globals()[_name].__name__ = globals()[_name].__qualname__ = _name


def tournament(
    policies: Mapping[str, Any] | Sequence[Any],
    prompts: Any,
    judge: Any,
    config: Any = None,
    /,
    *,
    reference: Any = None,
    out: str | None = None,
    device: str = "cpu",
    dtype: str | None = None,
    limit: int | None = None,
    progress: bool = False,
    title: str = "nlhf tournament",
    **kwargs: Any,
) -> Any:
    """A round-robin tournament (``nlhf eval``): ``policies`` as ``{name: spec}`` (a run directory, a saved
    policy, ``tiny``, ``smollm2``, a hub name, or a loaded :class:`nlhf.eval.PolicyEntry`) or a list of specs;
    ``prompts``: ``env-heldout`` / a prompt file / a list; ``judge``: a spec of ``nlhf eval --judge`` or a judge
    object; ``reference``: a policy name or spec (default: the first); ``config`` / ``kwargs``:
    :class:`nlhf.eval.TournamentConfig` keys. With ``out``, the report is written there."""
    from nlhf.eval.cli import load_eval_judge, load_eval_prompts
    from nlhf.eval.config import TournamentConfig
    from nlhf.eval.policies import PolicyEntry, load_policy
    from nlhf.eval.tournament import run_tournament

    cfg = build_config(TournamentConfig, config, **kwargs)
    named = dict(policies) if isinstance(policies, Mapping) else {str(p): p for p in policies}
    cache: dict = {}

    def entry(name: str, spec: Any) -> Any:
        if isinstance(spec, PolicyEntry):
            return spec
        return load_policy(str(spec), name=name, device=device, dtype=dtype, reference_cache=cache)

    pool = [entry(name, spec) for name, spec in named.items()]
    if reference is None:
        ref = pool[0]
    elif isinstance(reference, str) and reference in named:
        ref = pool[list(named).index(reference)]
    else:
        ref = entry("reference", reference)
    prompt_list = load_eval_prompts(prompts, limit) if isinstance(prompts, str) else list(prompts)[:limit]
    judge_obj = load_eval_judge(judge, cfg.batch_size, device) if isinstance(judge, str) else judge
    result = run_tournament(pool, prompt_list, judge_obj, cfg, reference=ref, progress=progress)
    if out is not None:
        from nlhf.config import save_config
        from nlhf.report import write_report

        write_report(result, out, title=title)
        save_config(cfg, f"{out}/eval_config.yaml")
    return result


__all__ = [
    "train",
    "train_dno",
    "train_dpo",
    "train_inpo",
    "train_mirror_prox",
    "train_mpo",
    "train_ipo",
    "train_nash_md",
    "train_online_ipo",
    "train_preference_model",
    "train_reward_model",
    "train_general_preference_model",
    "train_rlhf",
    "train_sppo",
    "tournament",
]
