"""Losses as pure functions of log-probabilities (THEORY.md Sec. 1, 4, 5, 6).

One file per family; each function returns an unreduced :class:`~nlhf.losses.base.LossOutput`
(per pair/sample, per token for PPO) so the trainer normalises over the whole accumulated
batch.

========== ======================================== ==================================
name       function                                 reported KL (estimator)
========== ======================================== ==================================
dpo        pairwise.dpo_loss                        none (offline pairs)
ipo        pairwise.ipo_loss                        none (offline pairs)
cdpo       pairwise.cdpo_loss                       none (offline pairs)
nash_md_pg nash.nash_md_pg_loss                     kl_k1, kl_k3 of KL(pi || mu), x w
online_ipo nash.online_ipo_loss                     none (needs per-token log-probs)
rlhf_pg    rlhf.rlhf_pg_loss                        kl_k1 (also in the reward), kl_k3
ppo        rlhf.ppo_clip_loss                       approx_kl_old: k3 of KL(pi_old || pi)
bce        preference.bce_preference_loss           -
bt         preference.bradley_terry_loss            -
========== ======================================== ==================================

The successors' losses (THEORY.md Sec. 8) -- SPPO's and INPO's square losses
(:func:`nlhf.losses.successors.sppo_loss`, :func:`~nlhf.losses.successors.inpo_loss`), the
mirror-prox / MPO pair loss (:func:`~nlhf.losses.successors.mirror_pair_loss`) and DNO's DPO
against pi_t (:func:`~nlhf.losses.successors.dno_loss`) -- are imported from their module
directly (not registered here).

k1 = sum_n log pi/mu and k3 = sum_n (mu/pi - 1 - log mu/pi) over the sampled tokens,
sampled under pi (:mod:`nlhf.losses.kl`); "x w": importance-weighted when the samples came
from another distribution.

:func:`get_loss` maps a name to its function and refuses unknown names. Importing this
package is cheap: the loss modules (and torch) load on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

# name -> (module, function)
LOSSES: dict[str, tuple[str, str]] = {
    "dpo": ("nlhf.losses.pairwise", "dpo_loss"),
    "ipo": ("nlhf.losses.pairwise", "ipo_loss"),
    "cdpo": ("nlhf.losses.pairwise", "cdpo_loss"),
    "nash_md_pg": ("nlhf.losses.nash", "nash_md_pg_loss"),
    "online_ipo": ("nlhf.losses.nash", "online_ipo_loss"),
    "rlhf_pg": ("nlhf.losses.rlhf", "rlhf_pg_loss"),
    "ppo": ("nlhf.losses.rlhf", "ppo_clip_loss"),
    "bce": ("nlhf.losses.preference", "bce_preference_loss"),
    "bt": ("nlhf.losses.preference", "bradley_terry_loss"),
}


def known_losses() -> list[str]:
    """The registered loss names, sorted."""
    return sorted(LOSSES)


def get_loss(name: str) -> Callable[..., Any]:
    """The loss function registered under ``name``; a ValueError listing the known names otherwise."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(known_losses())}")
    module, function = LOSSES[name]
    return getattr(importlib.import_module(module), function)


__all__ = ["LOSSES", "get_loss", "known_losses"]
