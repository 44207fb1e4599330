"""The shipped ``configs/accelerate/*.yaml`` parse as ``accelerate launch`` reads them.

Each file goes through accelerate's own config dataclass (``ClusterConfig.from_yaml_file``:
unknown keys are refused there) and through ``accelerate launch``'s validation and
environment preparation (what a real launch exports to the training processes). The FSDP
file then builds accelerate's ``FullyShardedDataParallelPlugin`` from that environment.
DeepSpeed is not installed here: its files are checked up to the exported environment only
(documented as not yet run). The online and RLHF trainers read the same environment to
refuse FSDP and ZeRO-3 (:func:`nlhf.train.run.refuse_sharded_weights`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "accelerate"
NAMES = ("ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3")


def launch_env(name: str) -> dict[str, str]:
    """The environment ``accelerate launch --config_file configs/accelerate/<name>.yaml`` gives its processes."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(CONFIGS / f"{name}.yaml"), "train.py"])
    args, _, _ = _validate_launch_command(args)
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = []  # set by `accelerate launch` itself
        return dict(prepare_deepspeed_cmd_env(args)[1])
    return dict(prepare_multi_gpu_env(args))


def test_the_four_configs_are_shipped():
    assert sorted(p.stem for p in CONFIGS.glob("*.yaml")) == sorted(NAMES)


@pytest.mark.parametrize(
    ("name", "kind", "extra"),
    [("ddp", "MULTI_GPU", None), ("fsdp", "FSDP", "fsdp_config"), ("deepspeed_zero2", "DEEPSPEED", "deepspeed_config"),
     ("deepspeed_zero3", "DEEPSPEED", "deepspeed_config")],
)  # fmt: skip
def test_config_parses_with_accelerates_dataclass(name, kind, extra):
    from accelerate.commands.config.config_args import ClusterConfig

    raw = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    cfg = ClusterConfig.from_yaml_file(str(CONFIGS / f"{name}.yaml"))
    assert cfg.distributed_type.name == kind and cfg.num_machines == 1 and not cfg.use_cpu
    assert cfg.mixed_precision == "no"  # nlhf's loop.mixed_precision decides (and is never applied on CPU)
    if extra:
        assert getattr(cfg, extra) == raw[extra]


def test_ddp_launch_environment():
    env = launch_env("ddp")
    assert env["ACCELERATE_MIXED_PRECISION"] == "no"
    assert "ACCELERATE_USE_FSDP" not in env and "ACCELERATE_USE_DEEPSPEED" not in env


def test_fsdp_launch_environment_builds_the_plugin(monkeypatch):
    from accelerate.utils import FullyShardedDataParallelPlugin

    env = launch_env("fsdp")
    assert env["ACCELERATE_USE_FSDP"] == "true"
    assert env["FSDP_SYNC_MODULE_STATES"] == env["FSDP_CPU_RAM_EFFICIENT_LOADING"] == "true"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # sync_module_states asks for the current GPU, which this CPU lacks (cpu_ram_efficient_loading forces it on)
    monkeypatch.setenv("FSDP_SYNC_MODULE_STATES", "false")
    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "false")
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 1
    assert plugin.sharding_strategy.name == "FULL_SHARD"
    assert plugin.state_dict_type.name == "SHARDED_STATE_DICT"  # checkpoints: sharded optimiser state
    assert plugin.auto_wrap_policy is not None and plugin.use_orig_params is True


@pytest.mark.parametrize(("name", "stage"), [("deepspeed_zero2", "2"), ("deepspeed_zero3", "3")])
def test_deepspeed_launch_environment(name, stage):
    env = launch_env(name)
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true"
    assert env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == stage
    assert env["ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE"] == "none"


@pytest.mark.parametrize(("name", "refused"), [("ddp", False), ("fsdp", True), ("deepspeed_zero2", False),
                                               ("deepspeed_zero3", True)])  # fmt: skip
def test_online_trainers_refuse_exactly_the_sharded_launches(monkeypatch, name, refused):
    from nlhf.config import ConfigError
    from nlhf.train.run import refuse_sharded_weights

    for key in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_DEEPSPEED_ZERO_STAGE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in launch_env(name).items():
        monkeypatch.setenv(key, value)
    if refused:
        with pytest.raises(ConfigError, match="shards the policy's weights"):
            refuse_sharded_weights("algorithm nash_md")
    else:
        refuse_sharded_weights("algorithm nash_md")
