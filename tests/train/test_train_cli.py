"""``nlhf train ...``'s parser: KEY=VALUE overrides anywhere on the line; families registered by reference."""

from __future__ import annotations

import argparse

import pytest

from nlhf.train import dpo, nash_md, online_ipo, rlhf
from nlhf.train.cli import TRAIN_FAMILIES, register


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="nlhf")
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(list(argv))


def test_overrides_are_accepted_anywhere_on_the_line():
    args = parse(
        "train", "dpo", "--data", "D", "tau=0.2", "--out", "O", "loop.max_steps=3", "--resume", "k3=v"
    )
    assert (args.data, args.out, args.resume) == ("D", "O", True)
    assert args.overrides == ["tau=0.2", "loop.max_steps=3", "k3=v"]  # in command-line order
    args = parse("train", "nash-md", "a=1", "--prompts", "P", "b=2", "--judge", "J", "c=3")
    assert (args.prompts, args.judge, args.overrides) == ("P", "J", ["a=1", "b=2", "c=3"])
    args = parse("train-pm", "--data", "D", "optim.lr=1e-4", "--out", "O", "loop.max_steps=2")
    assert args.overrides == ["optim.lr=1e-4", "loop.max_steps=2"]


def test_a_stray_word_is_still_an_error():
    from nlhf.config import ConfigError, parse_overrides

    with pytest.raises(SystemExit):  # two runs of positionals: the second is not KEY=VALUE
        parse("train", "dpo", "a=1", "--data", "D", "not-an-override")
    args = parse("train", "dpo", "--data", "D", "--out", "O", "not-an-override")
    with pytest.raises(ConfigError):
        parse_overrides(args.overrides)


def test_families_name_their_config_and_run_function_directly():
    expected = {
        "dpo": (dpo.OfflineConfig, dpo.run_offline),
        "nash-md": (nash_md.NashMDConfig, nash_md.run_nash_md),
        "nash-ema": (nash_md.NashMDConfig, nash_md.run_nash_md),
        "online-ipo": (online_ipo.OnlineIPOConfig, online_ipo.run_online_ipo),
        "ipo-md": (online_ipo.OnlineIPOConfig, online_ipo.run_online_ipo),
        "ppo": (rlhf.RLHFConfig, rlhf.run_rlhf),
    }
    for name, (config_class, run) in expected.items():
        assert (TRAIN_FAMILIES[name].config_class, TRAIN_FAMILIES[name].run) == (config_class, run)
