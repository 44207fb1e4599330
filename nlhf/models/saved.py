"""Load a saved judge model of any kind: the pairwise preference model, the reward model, the general preference model.

``SequenceScorer.from_pretrained`` finds the class of a directory's ``kind`` among the
kinds registered by their modules; this module imports both, so :func:`load_scorer` reads
any directory that ``nlhf train-pm`` or ``nlhf train-rm`` wrote. (The base class in
:mod:`nlhf.models.scorer` does not import its subclasses: no import circle.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nlhf.models.general_preference import GeneralPreferenceModel
from nlhf.models.preference_model import PairwisePreferenceModel
from nlhf.models.reward_model import RewardModel
from nlhf.models.scorer import SequenceScorer

KINDS: dict[str, type[SequenceScorer]] = {
    cls.kind: cls for cls in (PairwisePreferenceModel, RewardModel, GeneralPreferenceModel)
}


def load_scorer(path: str | Path, **kwargs: Any) -> SequenceScorer:
    """The saved preference or reward model in ``path`` (``kwargs``: as ``SequenceScorer.from_pretrained``)."""
    return SequenceScorer.from_pretrained(path, **kwargs)


__all__ = ["KINDS", "load_scorer"]
