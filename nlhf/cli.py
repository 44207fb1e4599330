"""The ``nlhf`` command line: ``nlhf demo | lab | train-pm | train-rm | train | eval``.

Each command lives next to the code it runs, in a module with a ``register(subparsers)``
function. Those modules import nothing heavy at import time (torch, transformers and
matplotlib load inside the command), so ``nlhf --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules that add sub-commands, in the order the help lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "nlhf.demo",
    "nlhf.lab.cli",
    "nlhf.train.cli",
    "nlhf.train.offline_cli",
    "nlhf.eval.cli",
)


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
    from nlhf import __version__

    parser.add_argument("--version", action="version", version=f"nlhf {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    from nlhf.config import ConfigError
    from nlhf.data.errors import PreferenceDataError
    from nlhf.models.loading import ModelLoadError  # cheap: torch is imported lazily there

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
    except KeyboardInterrupt:
        print("nlhf: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
