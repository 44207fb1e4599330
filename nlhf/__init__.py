"""nlhf: Nash learning from human feedback and the PsiPO family, checked against exact games.

Sub-packages (data flows one way, top to bottom; ``lab`` stands beside all of it):

* :mod:`nlhf.lab`      numpy-only exact theory lab: preference games, Nash equilibria, Nash-MD
* :mod:`nlhf.data`     preference data: schema, readers, validation, tokenisation
* :mod:`nlhf.models`   causal LMs, preference model, reward model
* :mod:`nlhf.losses`   losses as pure functions of log-probabilities
* :mod:`nlhf.train`    the shared accelerate loop and one short loop per family

Importing :mod:`nlhf` is cheap: nothing heavy (torch, transformers, matplotlib) is imported
until it is used.
"""

__version__ = "0.1.0.dev0"
