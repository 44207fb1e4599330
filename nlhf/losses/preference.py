"""Losses that fit the judges: the pairwise preference model and the Bradley-Terry reward model
(THEORY.md Sec. 1; NLHF Sec. 3 and 7).

Both are binary cross-entropy on a logit, with soft labels honoured:
    loss = -[p log sigmoid(z) + (1 - p) log sigmoid(-z)],   p = P(first > second) in [0, 1],
computed from the logit z (never from a probability: log sigmoid(z) is exact for any z, while
log of a probability rounded to 0 or 1 is not). Its minimum over z is the entropy of p,
reached at sigmoid(z) = p, so a soft label is fitted, not rounded.

* Pairwise preference model: z = f(x, first, second) - f(x, second, first)
  (:func:`nlhf.models.preference_model.preference_logit`), which builds P(y > y') = 1 - P(y' > y)
  and P(y > y) = 1/2 in. Swapping the pair (z -> -z, p -> 1 - p) leaves the loss unchanged.
* Bradley-Terry: z = r(x, first) - r(x, second).

Metrics (B,): ``prob`` = sigmoid(z); ``accuracy`` = 1 where sigmoid(z) and the label fall on
the same side of 1/2, 0 where opposite, 1/2 where either is exactly 1/2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from nlhf.losses.base import LossOutput, check_probabilities, check_same_shape


def bce_preference_loss(logits: Tensor, labels: Tensor) -> LossOutput:
    """BCE of the pairwise preference model with (soft) labels (THEORY.md Sec. 1).

    logits (B,): z = f(x, first, second) - f(x, second, first) (from
    :func:`nlhf.models.preference_model.preference_logit`; a model that outputs probabilities
    should output this logit instead);
    labels (B,): P(first > second) in [0, 1]. Returns loss (B,) = -[p log sig(z) + (1 - p) log sig(-z)].
    Example: z = ln 3 (P = 0.75): label 1 -> -ln 0.75 = 0.287682; label 0.25 -> 1.111641.
    """
    check_same_shape("bce_preference_loss", 1, logits=logits, labels=labels)
    check_probabilities("bce_preference_loss", "labels", labels)
    p = labels.detach().to(logits.dtype)  # (B,)
    loss = -(p * F.logsigmoid(logits) + (1 - p) * F.logsigmoid(-logits))  # (B,)
    z = logits.detach()
    agree = torch.sign(z) * torch.sign(p - 0.5)  # (B,) in {-1, 0, 1}
    metrics = {"prob": torch.sigmoid(z), "accuracy": 0.5 * (agree + 1)}
    return LossOutput(loss=loss, metrics=metrics)


def bradley_terry_loss(reward_first: Tensor, reward_second: Tensor, labels: Tensor) -> LossOutput:
    """Bradley-Terry reward-model loss: BCE of sigmoid(r(x, first) - r(x, second)) against labels
    (THEORY.md Sec. 1). Shapes (B,) -> loss (B,); metrics as :func:`bce_preference_loss` plus
    ``reward_margin`` = r_first - r_second. Example: r = (1, 1 - ln 3), label 1 -> 0.287682.
    """
    check_same_shape(
        "bradley_terry_loss", 1, reward_first=reward_first, reward_second=reward_second, labels=labels
    )
    margin = reward_first - reward_second  # (B,)
    out = bce_preference_loss(margin, labels)
    metrics = dict(out.metrics)
    metrics["reward_margin"] = margin.detach()
    return LossOutput(loss=out.loss, metrics=metrics)
