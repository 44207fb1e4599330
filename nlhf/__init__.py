"""nlhf: Nash learning from human feedback and the PsiPO family, checked against exact games.

Sub-packages (data flows one way, top to bottom; ``lab`` stands beside all of it):

* :mod:`nlhf.lab`      numpy-only exact theory lab: preference games, Nash equilibria, Nash-MD
* :mod:`nlhf.data`     preference data: schema, readers, validation, tokenisation
* :mod:`nlhf.models`   causal LMs, preference model, reward model
* :mod:`nlhf.losses`   losses as pure functions of log-probabilities
* :mod:`nlhf.train`    the shared accelerate loop and one short loop per family

The Python API (:mod:`nlhf.api`, loaded on first use): ``train_dpo``, ``train_ipo``,
``train_nash_md``, ``train_online_ipo``, ``train_rlhf``, ``train_sppo``, ``train_inpo``,
``train_dno``, ``train_mpo``, ``train_mirror_prox``, ``train_preference_model``, ``train_reward_model``,
``train_general_preference_model`` and ``tournament``::

    import nlhf
    nlhf.train_nash_md(prompts="prompts.jsonl", judge="llm:smollm2", out="runs/nash", loop={"max_steps": 100})

Importing :mod:`nlhf` is cheap: nothing heavy (torch, transformers, matplotlib) is imported
until it is used.
"""

from nlhf._lazy import lazy_exports
from nlhf._version import __version__ as __version__  # re-exported: nlhf.__version__

_API = ("train_dpo", "train_ipo", "train_nash_md", "train_online_ipo", "train_rlhf", "train_sppo", "train_inpo",
        "train_dno", "train_mpo", "train_mirror_prox", "train_preference_model", "train_reward_model",
        "train_general_preference_model", "tournament")  # fmt: skip
_EXPORTS = {name: "nlhf.api" for name in _API}

__all__ = sorted(_EXPORTS)  # the names are declared once, in _EXPORTS

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
