"""``nlhf eval``: a round-robin tournament of policies under a judge, written as a report.

::

    nlhf eval --policy ref=smollm2 --policy nash=runs/nash-md --policy rlhf=runs/rlhf \\
              --prompts env-heldout --judge oracle --out runs/eval

* ``--policy NAME=SPEC`` (repeatable): a training run directory, a saved policy directory,
  ``smollm2``, ``tiny``, a hub name or path (:func:`nlhf.eval.load_policy`);
* ``--reference NAME|SPEC``: mu (KL reference, best-of-n exploiter): a ``--policy`` name, or
  a spec loaded outside the pool; default: the first ``--policy``;
* ``--prompts``: ``env-heldout`` / ``env-train`` / ``env-all`` (the environments' built-in
  prompts, :func:`nlhf.envs.load_env_prompts`) or any file :func:`nlhf.data.load_prompts` reads;
* ``--judge``: ``oracle`` (the rater population, :func:`nlhf.envs.default_rater_population`),
  ``oracle-bt`` (the Bradley-Terry control), a directory saved by ``nlhf train-pm`` /
  ``nlhf train-rm``, ``hf-reward:PATH_OR_NAME`` (a sequence-classification reward model) or
  ``llm:PATH_OR_NAME`` (a causal LM as a pairwise judge) (:func:`nlhf.judges.load_judge`);
* ``--config YAML`` and ``--set key=value`` set :class:`nlhf.eval.TournamentConfig` keys
  (defaults < YAML < --set < the dedicated flags).

Writes the report (:func:`nlhf.report.write_report`) and ``eval_config.yaml`` into ``--out``
and prints where the report is. Cheap to import: everything heavy loads in the command.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ENV_PROMPTS = {"env-heldout": "heldout", "env-train": "train", "env-all": "all"}
ORACLES = ("oracle", "oracle-bt")


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``eval`` to the ``nlhf`` command line."""
    p = subparsers.add_parser(
        "eval",
        help="round-robin tournament of policies under a judge: win rates, KL, exploitability, HTML report",
        description=(
            "Round-robin tournament: sample responses from every policy, judge every ordered pair on the same\n"
            "prompts, and write win_rates.png, tournament.md, report.html (self-contained), results.json and\n"
            "samples.jsonl into --out. Win rates carry prompt-clustered t intervals (judges that return probabilities) or\n"
            "Wilson / Clopper-Pearson intervals (0/1 outcomes, or --interval); KL(pi || mu) is a\n"
            "Monte Carlo estimate with its standard error; exploitability is exact at the class level under\n"
            "the oracles, else the best win rate of the pool or of a best-of-n reference response.\n"
            "Semantics in detail: python -m pydoc nlhf.eval.tournament"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--policy",
        action="append",
        required=True,
        metavar="NAME=SPEC",
        help="a policy: run directory, saved policy, smollm2, tiny, hub name or path (repeatable)",
    )
    p.add_argument(
        "--reference",
        metavar="NAME|SPEC",
        help="mu: a --policy name or a spec loaded outside the pool (default: the first --policy)",
    )
    p.add_argument("--prompts", required=True, metavar="PATH|env-heldout|env-train|env-all")
    p.add_argument("--limit", type=int, help="use the first LIMIT prompts")
    p.add_argument(
        "--judge",
        required=True,
        metavar="oracle|oracle-bt|DIR|hf-reward:M|llm:M|http://HOST:PORT/v1",
        help="oracle (rater population), oracle-bt (Bradley-Terry control), a saved PM/RM directory, "
        "hf-reward:PATH_OR_NAME (a one-logit sequence-classification reward model) or llm:PATH_OR_NAME "
        "(a causal LM as a pairwise judge, both presentation orders averaged) or http://HOST:PORT/v1 (that judge "
        "on an OpenAI-compatible server)",
    )
    p.add_argument("--out", required=True, help="report directory")
    p.add_argument("--samples-per-prompt", type=int, dest="samples_per_prompt")
    p.add_argument("--max-new-tokens", type=int, dest="max_new_tokens")
    p.add_argument(
        "--interval",
        choices=("auto", "cluster_t", "wilson", "clopper_pearson"),
        help="win-rate intervals (default auto: cluster_t for probabilities, wilson for 0/1 outcomes)",
    )
    p.add_argument("--seed", type=int)
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... (policies and a learned judge)")
    p.add_argument(
        "--dtype", choices=("float32", "bfloat16", "float16"), help="policy dtype (default: float32)"
    )
    p.add_argument("--config", metavar="YAML", help="TournamentConfig keys")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="a TournamentConfig key (repeatable), e.g. --set bootstrap=2000",
    )
    p.add_argument("--title", default="nlhf tournament")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_eval_command)  # fmt: skip
    return p


def load_eval_prompts(spec: str, limit: int | None = None) -> list[Any]:
    """``env-heldout`` / ``env-train`` / ``env-all`` or a prompt file (nlhf.data.load_prompts)."""
    if spec in ENV_PROMPTS:
        from nlhf.envs import load_env_prompts

        prompts = load_env_prompts(ENV_PROMPTS[spec])
        return prompts[:limit] if limit else prompts
    from nlhf.data import load_prompts

    return list(load_prompts(spec, limit=limit))


def load_eval_judge(spec: str, batch_size: int, device: str) -> Any:
    """``oracle`` / ``oracle-bt``, or any spec of :func:`nlhf.judges.load_judge` (a saved PM/RM directory,
    ``hf-reward:PATH_OR_NAME``, ``llm:PATH_OR_NAME``, ``http://HOST:PORT/v1``), its model moved to ``device``."""
    if spec == "oracle":
        from nlhf.envs import default_rater_population

        return default_rater_population()
    if spec == "oracle-bt":
        from nlhf.envs import default_bradley_terry

        return default_bradley_terry()
    from nlhf.judges import HF_REWARD_PREFIX, HTTP_PREFIXES, LLM_PREFIX, load_judge

    hf_spec = spec.startswith((HF_REWARD_PREFIX, LLM_PREFIX, *HTTP_PREFIXES))
    if not hf_spec and not Path(spec).is_dir():
        raise ValueError(f"--judge {spec!r}: not {' or '.join(ORACLES)}, not hf-reward:M, llm:M or http://..., nor a "
                         "directory (a saved preference or reward model: nlhf train-pm / train-rm)")  # fmt: skip
    try:
        judge = load_judge(spec, batch_size)
    except (OSError, ValueError, KeyError) as exc:
        if hf_spec:
            raise ValueError(str(exc)) from exc  # load_judge's message names the spec already
        raise ValueError(f"--judge {spec!r}: cannot load a preference or reward model: {exc}") from exc
    if hasattr(judge, "model"):  # an http:// judge has no local model
        judge.model.to(device)
    return judge


def run_eval_command(args: argparse.Namespace) -> int:
    from nlhf.config import load_config, save_config
    from nlhf.eval.config import TournamentConfig

    flags = {"samples_per_prompt": args.samples_per_prompt, "max_new_tokens": args.max_new_tokens,
             "interval": args.interval, "seed": args.seed}  # fmt: skip
    cfg = load_config(TournamentConfig, args.config, args.overrides, flags=flags)  # errors before any load
    try:
        return _run(args, cfg, save_config)
    except (ValueError, FileNotFoundError) as exc:
        from nlhf.config import ConfigError

        if isinstance(exc, ConfigError):
            raise
        print(f"nlhf eval: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, cfg: Any, save_config: Any) -> int:
    from nlhf.eval.policies import load_policy, parse_policy_arg

    parsed = [parse_policy_arg(a) for a in args.policy]
    names = [name or spec for name, spec in parsed]
    if len(set(names)) != len(names):
        raise ValueError(f"--policy: names must be unique, got {names}")
    prompts = load_eval_prompts(args.prompts, args.limit)
    if not prompts:
        raise ValueError(f"--prompts {args.prompts!r}: no prompts")
    judge = load_eval_judge(args.judge, cfg.batch_size, args.device)
    cache: dict = {}
    policies = []
    for (_, spec), label in zip(parsed, names):
        print(f"nlhf eval: loading {label} from {spec}", file=sys.stderr)
        policies.append(
            load_policy(spec, name=label, device=args.device, dtype=args.dtype, reference_cache=cache)
        )
    if args.reference is None:
        reference = policies[0]
    elif args.reference in names:
        reference = policies[names.index(args.reference)]
    else:
        reference = load_policy(args.reference, name="reference", device=args.device, dtype=args.dtype,
                                reference_cache=cache)  # fmt: skip
    from nlhf.eval.tournament import run_tournament
    from nlhf.report import write_report

    result = run_tournament(policies, prompts, judge, cfg, reference=reference, progress=not args.no_progress)
    out = Path(args.out)
    command = "\n".join(
        [f"- policy **{n}**: `{s}`" for n, (_, s) in zip(names, parsed)]
        + [f"- reference (mu): `{args.reference or names[0]}`", f"- prompts: `{args.prompts}` ({len(prompts)})",
           f"- judge: `{args.judge}`"]
    )  # fmt: skip
    paths = write_report(result, out, title=args.title, sections=[("Command", command)])
    save_config(cfg, out / "eval_config.yaml")
    print(
        json.dumps(
            {"report": str(paths["html"]), "markdown": str(paths["markdown"]), "json": str(paths["json"])}
        )
    )
    print(f"nlhf eval: report written to {paths['html']}")
    return 0
