"""nlhf.config: configs are validated, naming the offending key, before anything loads."""

from dataclasses import dataclass, field
from typing import Literal

import pytest
import yaml

from nlhf.config import ConfigError, check, from_dict, load_config, parse_overrides, save_config, to_dict


@dataclass(frozen=True)
class Optim:
    lr: float = 1e-3
    schedule: Literal["cosine", "linear"] = "cosine"


@dataclass(frozen=True)
class Run:
    tau: float = 0.1
    steps: int = 10
    name: str = "run"
    lora: bool = False
    layers: tuple[str, ...] = ("q", "v")
    model: str | None = None
    optim: Optim = field(default_factory=Optim)

    def __post_init__(self):
        check(self.tau > 0, "tau", f"must be > 0, got {self.tau}")


def test_defaults_and_nested_overrides():
    cfg = load_config(Run, overrides=["optim.lr=3e-4", "lora=true", "layers=[a, b, c]", "model=null"])
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.lora is True
    assert cfg.layers == ("a", "b", "c")
    assert cfg.model is None
    assert cfg.steps == 10


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["optim.lrr=1"], "unknown key 'optim.lrr'"),
        (["stepz=1"], "unknown key 'stepz'"),
        (["steps=fast"], "steps: expected int, got str 'fast'"),
        (["steps=1.5"], "steps: expected int, got float 1.5"),
        (["optim.lr=fast"], "optim.lr: expected float, got str 'fast'"),
        (["optim.schedule=step"], "optim.schedule: must be one of ['cosine', 'linear'], got 'step'"),
        (["lora=3"], "lora: expected bool, got int 3"),
        (["tau=0"], "tau: must be > 0, got 0.0"),
        (["tau=-1"], "tau: must be > 0, got -1.0"),
        (["optim=3"], "optim: expected a mapping for Optim, got int"),
        (["noequals"], "is not of the form key=value"),
    ],
)
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(Run, overrides=overrides)
    assert message in str(err.value)


def test_yaml_then_overrides_then_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("tau: 0.5\nsteps: 7\noptim:\n  lr: 0.01\n")
    cfg = load_config(Run, path, overrides=["steps=8"], flags={"name": "x", "steps": None})
    assert (cfg.tau, cfg.steps, cfg.name, cfg.optim.lr) == (0.5, 8, "x", 0.01)


def test_yaml_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Run, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="bad.yaml: the top level must be a mapping, got list"):
        load_config(Run, bad)


def test_save_round_trip(tmp_path):
    cfg = load_config(Run, overrides=["optim.lr=0.5", "layers=[k]"])
    save_config(cfg, tmp_path / "run" / "config.yaml")
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved == to_dict(cfg)
    assert from_dict(Run, saved) == cfg
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_parse_overrides_nests_and_types():
    assert parse_overrides(["a.b.c=1", "a.d=x", "--e-f=2.5"]) == {"a": {"b": {"c": 1}, "d": "x"}, "e_f": 2.5}


def test_config_constructors_take_nested_sections_as_dicts():
    """NashMDConfig(loop={...}) as in YAML: a partial section keeps the trainer's defaults for its other keys."""
    from nlhf.config import ConfigError
    from nlhf.train.dpo import OfflineConfig
    from nlhf.train.nash_md import NashMDConfig

    default = NashMDConfig()
    cfg = NashMDConfig(
        loop={"max_steps": 2}, optim={"lr": 1e-5}, lora={"r": 4}, sampling={"max_new_tokens": 8}
    )
    assert (cfg.loop.max_steps, cfg.optim.lr, cfg.lora.r, cfg.sampling.max_new_tokens) == (2, 1e-5, 4, 8)
    assert (
        cfg.loop.log_every == default.loop.log_every and cfg.optim.warmup_steps == default.optim.warmup_steps
    )
    assert cfg.sampling.temperature == default.sampling.temperature
    assert OfflineConfig(loop={"max_steps": 3}).loop.max_steps == 3
    with pytest.raises(ConfigError, match=r"unknown key 'loop\.max_step'"):
        NashMDConfig(loop={"max_step": 2})
    with pytest.raises(ConfigError, match="optim.lr"):
        NashMDConfig(optim={"lr": "fast"})
