"""The ``nlhf`` command line: ``nlhf demo | lab | train-pm | train-rm | train | eval``.

Each command lives next to the code it runs, in a module with a ``register(subparsers)``
function, imported here by name. Those modules import nothing heavy at import time (torch,
transformers and matplotlib load inside the command), so ``nlhf --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from nlhf import demo
from nlhf._version import __version__
from nlhf.config import ConfigError
from nlhf.data.errors import PreferenceDataError
from nlhf.eval import cli as eval_cli
from nlhf.lab import cli as lab_cli
from nlhf.models.loading import ModelLoadError  # cheap: torch is imported lazily there
from nlhf.train import cli as train_cli
from nlhf.train.checkpoint import CheckpointError

# The register(subparsers) functions of the sub-commands, in the order the help lists them.
COMMANDS = (demo.register, lab_cli.register, train_cli.register, eval_cli.register)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nlhf",
        description=(
            "Nash learning from human feedback (NLHF) and the PsiPO family (IPO, DPO, RLHF).\n"
            "Learn a pairwise preference model, then find the policy no other policy beats;\n"
            "every algorithm is checked against the exact answers of small games (nlhf lab)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"nlhf {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in COMMANDS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except ConfigError as exc:
        print(f"nlhf: config error: {exc}", file=sys.stderr)
        return 2
    except PreferenceDataError as exc:
        print(f"nlhf: data error: {exc}", file=sys.stderr)
        return 2
    except ModelLoadError as exc:
        print(f"nlhf: model error: {exc}", file=sys.stderr)
        return 2
    except CheckpointError as exc:
        print(f"nlhf: checkpoint error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nlhf: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
