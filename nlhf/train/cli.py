"""Command-line entry points of ``nlhf.train``: ``nlhf train-pm`` and ``nlhf train-rm``.

Cheap to import (argparse only): the trainers load inside the command.
"""

from __future__ import annotations

from typing import Any

EPILOG = (
    "Config: defaults < --config YAML < KEY=VALUE overrides < --data/--eval-data/--model/--out.\n"
    "Writes OUT/config.yaml, metrics.jsonl, tensorboard/, ckpt-<step>/ (loop.save_every), the model\n"
    "(save_pretrained), metrics.json (eval accuracy, log_loss, ece) and reliability.png."
)


def register(subparsers: Any) -> None:
    """Add ``train-pm`` and ``train-rm`` to an ``argparse`` sub-parser collection."""
    import argparse

    for kind, name, what in (
        ("pm", "train-pm", "the pairwise preference model P(y > y' | x) (binary cross-entropy on the label)"),
        ("rm", "train-rm", "the Bradley-Terry reward model r(x, y) (the RLHF baseline)"),
    ):
        parser = subparsers.add_parser(
            name,
            help=f"train {what.split(' (')[0]}",
            description=f"Train {what}. THEORY.md Sec. 1.",
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        from nlhf.train.fit import add_arguments

        add_arguments(parser)
        _accept_overrides_anywhere(parser)
        parser.set_defaults(func=_runner(kind))


def _accept_overrides_anywhere(parser: Any) -> None:
    """Let ``KEY=VALUE`` overrides stand after options too (``--out DIR optim.lr=1e-4``).

    argparse fills a ``nargs="*"`` positional once; ``KEY=VALUE`` strings that come after an
    option would be "unrecognized arguments". This sub-parser hands them to ``overrides``.
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

    parser.parse_known_args = parse_known_args


def _runner(kind: str) -> Any:
    def run(args: Any) -> int:
        from nlhf.train.fit import _command

        return _command(kind)(args)

    return run
