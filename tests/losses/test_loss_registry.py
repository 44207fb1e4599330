"""The loss registry: every name resolves to its function; an unknown name is an error."""

import subprocess
import sys

import pytest

from nlhf.losses import LOSSES, get_loss, known_losses


def test_registry_names_map_to_functions():
    from nlhf.losses import nash, pairwise, preference, rlhf

    expected = {
        "dpo": pairwise.dpo_loss,
        "ipo": pairwise.ipo_loss,
        "cdpo": pairwise.cdpo_loss,
        "nash_md_pg": nash.nash_md_pg_loss,
        "online_ipo": nash.online_ipo_loss,
        "rlhf_pg": rlhf.rlhf_pg_loss,
        "ppo": rlhf.ppo_clip_loss,
        "bce": preference.bce_preference_loss,
        "bt": preference.bradley_terry_loss,
    }
    assert known_losses() == sorted(expected) == sorted(LOSSES)
    for name, fn in expected.items():
        assert get_loss(name) is fn


@pytest.mark.parametrize("name", ["sigmoid", "DPO", "nash-md-pg", ""])
def test_unknown_loss_is_an_error_listing_known_names(name):
    with pytest.raises(ValueError) as err:
        get_loss(name)
    message = str(err.value)
    assert repr(name) in message
    assert "known losses: bce, bt, cdpo, dpo, ipo, nash_md_pg, online_ipo, ppo, rlhf_pg" in message


def test_importing_the_registry_does_not_import_torch():
    code = "import sys, nlhf.losses; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
