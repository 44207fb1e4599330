"""The two online NLHF trainers behind one name, for the tests that run all six online algorithms.

``nlhf.train.nash_md`` (nash_md, self_play, best_response, nash_ema) and
``nlhf.train.online_ipo`` (online_ipo, ipo_md) each have their own config and run
function; these helpers pick the one an ``algorithm`` belongs to.
"""

from __future__ import annotations

from typing import Any

from nlhf.config import resolve_config
from nlhf.train.nash_md import NASH_MD_ALGORITHMS, NashMDConfig, run_nash_md
from nlhf.train.online_ipo import ONLINE_IPO_ALGORITHMS, OnlineIPOConfig, run_online_ipo

ONLINE_ALGORITHMS = NASH_MD_ALGORITHMS + ONLINE_IPO_ALGORITHMS


def config_class(algorithm: str) -> type:
    return OnlineIPOConfig if algorithm in ONLINE_IPO_ALGORITHMS else NashMDConfig


def OnlineConfig(algorithm: str = "nash_md", **kw: Any) -> Any:  # noqa: N802  (reads like the classes it picks)
    return config_class(algorithm)(algorithm=algorithm, **kw)


def run_online(cfg: Any, **kw: Any) -> Any:
    return (run_online_ipo if isinstance(cfg, OnlineIPOConfig) else run_nash_md)(cfg, **kw)


def load_online_config(path: Any, overrides: list[str]) -> Any:
    """The config of the algorithm the overrides name (``algorithm=...``; default nash_md)."""
    algorithm = next((o.split("=", 1)[1] for o in overrides if o.startswith("algorithm=")), "nash_md")
    return resolve_config(config_class(algorithm), path, overrides)
