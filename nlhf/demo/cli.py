"""``nlhf demo``: the command line of the demo (:func:`nlhf.demo.run.run_demo`, or ``--lab``:
:func:`nlhf.lab.showcase.run_lab_showcase`)."""

from __future__ import annotations

import time
from pathlib import Path

from nlhf.lab.showcase import run_lab_showcase


def cmd_demo(args) -> int:
    """``nlhf demo``: the NLHF pipeline end to end (:func:`nlhf.demo.run.run_demo`), or ``--lab`` only."""
    import os

    os.environ["HF_HUB_OFFLINE"] = "1"  # the demo never contacts a model hub
    out = Path(args.out or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}")
    if args.lab:
        run_lab_showcase(out, quick=args.quick, metadata={"command": "demo --lab", "device": args.device})
        print(f"report: {out / 'report.md'}")
        return 0
    from nlhf.demo.config import load_demo_config
    from nlhf.demo.run import run_demo

    cfg = load_demo_config(
        args.config,
        args.overrides or (),
        quick=args.quick,
        budget=args.budget,
        model=args.model,
        device=args.device,
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
        "Every budget knob is a key of nlhf.demo.DemoConfig (--set key=value, --config YAML).\n"
        "--quick is a smoke run of every stage (minutes) that makes no significance claim.\n"
        "--lab runs only the exact theory lab showcase (seconds, no model).",
        epilog="examples:\n  nlhf demo\n  nlhf demo --quick --out runs/demo-quick\n"
        "  nlhf demo --budget long\n  nlhf demo --set nash_steps=60 --set tau=0.02\n  nlhf demo --device cuda --model PATH_OR_CACHED_HUB_NAME\n\n"
        "The demo runs offline (HF_HUB_OFFLINE=1): a hub name must already be in the local cache.",
    )
    p.add_argument("--out", default=None, help="run directory (default runs/demo-<timestamp>)")
    p.add_argument("--quick", action="store_true", help="a smoke run of every stage (no significance claim)")
    p.add_argument("--budget", default="default", choices=["default", "long"],
                   help="default (about 28 min on 2 cores) or long: 4x the policy steps, 12 tournament samples a "
                   "prompt (about 65 min)")  # fmt: skip
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
