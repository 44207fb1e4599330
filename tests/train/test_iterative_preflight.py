"""The iterative trainers (SPPO, INPO, DNO, MPO, mirror prox) fail at start, before any model or judge
loads, on an unusable output directory or a sharded (FSDP) launch, as tests/train/test_train_preflight.py
checks for the other trainers."""

from __future__ import annotations

import pytest
from test_train_preflight import no_loading  # noqa: F401  (a fixture)
from trainer_runs import PROMPTS

from nlhf.config import ConfigError
from nlhf.train import dno, inpo, mirror_prox, mpo, sppo
from nlhf.train.config import LoopConfig
from nlhf.train.loop import RunDirError

CONFIGS = {
    "sppo": (sppo.SPPOConfig, sppo.run_sppo),
    "inpo": (inpo.INPOConfig, inpo.run_inpo),
    "dno": (dno.DNOConfig, dno.run_dno),
    "mpo": (mpo.MPOConfig, mpo.run_mpo),
    "mirror_prox": (mirror_prox.MirrorProxConfig, mirror_prox.run_mirror_prox),
}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one torch thread (tests/conftest.py)."""


def start(trainer: str, out: str) -> None:
    config_class, run = CONFIGS[trainer]
    run(config_class(model="tiny", judge="judge-dir", out=out, loop=LoopConfig(max_steps=1, progress=False)),
        train_prompts=PROMPTS)  # fmt: skip


@pytest.mark.parametrize("trainer", CONFIGS)
def test_unwritable_output_dir_fails_before_any_model_loads(tmp_path, no_loading, trainer):  # noqa: F811
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(RunDirError, match=r"a-file/run cannot be created"):
        start(trainer, str(blocker / "run"))


@pytest.mark.parametrize("trainer", CONFIGS)
def test_sharded_launch_is_refused_before_any_model_loads(tmp_path, no_loading, monkeypatch, trainer):  # noqa: F811
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ConfigError, match="FSDP shards the policy's weights"):
        start(trainer, str(tmp_path / "run"))
