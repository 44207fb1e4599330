"""A lab :class:`~nlhf.lab.PreferenceGame` as a judge over single-token responses.

Issue 5 checks the real online trainers against the exact lab: a "language model" whose
response is ONE token, drawn from ``n`` allowed token ids, plays the preference game
``P[i, j] = P(y_i > y_j)`` (THEORY.md Sec. 2). This adapter is the bridge: action ``a`` of
the game is the token ``token_ids[a]``, and

    GameJudge.prob(prompts, first, second)[b] = P[action(first[b]), action(second[b])]

The trainers hand judges response TEXT (``Rollout.response_texts``, which decodes with
``skip_special_tokens=True``), so the adapter recognises action ``a`` by the text
``tokenizer.decode([token_ids[a]], skip_special_tokens=True)``; those texts must be
non-empty and pairwise distinct (a ``ValueError`` names the clashing actions otherwise).
A response that is not one of them (a token outside the game, an empty response, two
tokens) is a ``ValueError`` naming the row and the text, never a silent default.
:meth:`GameJudge.prob_ids` takes token ids directly, for code that never decodes.

The prompt is ignored: the game has no context (the lab's bandit setting).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from nlhf.judges import BaseJudge
from nlhf.lab.games import PreferenceGame

if TYPE_CHECKING:
    import torch

    from nlhf.data.schema import Prompt


class GameJudge(BaseJudge):
    """P(first > second) = ``game.P[action(first), action(second)]``, actions being token ids.

    ``game``: a lab :class:`PreferenceGame` (or a raw matrix, validated into one) over ``n``
    actions. ``token_ids[a]``: the token id that plays action ``a`` (``n`` distinct ids).
    ``tokenizer``: decodes each id to the response text the trainers will pass in; without
    one, ``texts`` must give those texts directly (``texts[a]`` for action ``a``).
    """

    def __init__(
        self,
        game: PreferenceGame | Any,
        token_ids: Sequence[int],
        tokenizer: Any | None = None,
        *,
        texts: Sequence[str] | None = None,
        name: str | None = None,
    ) -> None:
        self.game = game if isinstance(game, PreferenceGame) else PreferenceGame(game)
        ids = [int(t) for t in token_ids]
        if len(ids) != self.game.n:
            raise ValueError(f"GameJudge: {len(ids)} token_ids for a game with {self.game.n} actions")
        if len(set(ids)) != len(ids):
            dup = next(t for t in ids if ids.count(t) > 1)
            raise ValueError(f"GameJudge: token id {dup} plays more than one action (token_ids={ids})")
        self.token_ids = tuple(ids)
        if texts is None:
            if tokenizer is None:
                raise ValueError("GameJudge: give a tokenizer (to decode token_ids) or the action texts")
            texts = [tokenizer.decode([t], skip_special_tokens=True) for t in ids]
        texts = [str(t) for t in texts]
        if len(texts) != self.game.n:
            raise ValueError(f"GameJudge: {len(texts)} texts for a game with {self.game.n} actions")
        self.texts = tuple(texts)
        self._action_of_text: dict[str, int] = {}
        for a, text in enumerate(texts):
            if text == "":
                raise ValueError(
                    f"GameJudge: action {a} (token id {ids[a]}) decodes to an empty text "
                    "(a special token?); it could not be told apart in a response"
                )
            if text in self._action_of_text:
                b = self._action_of_text[text]
                raise ValueError(
                    f"GameJudge: actions {b} and {a} (token ids {ids[b]}, {ids[a]}) both decode to {text!r}"
                )
            self._action_of_text[text] = a
        self._action_of_id = {t: a for a, t in enumerate(ids)}
        self.name = name or f"GameJudge({self.game.n} actions)"

    def actions(self, responses: Sequence[str]) -> np.ndarray:
        """The action index of each response text, shape (B,) int64; ``ValueError`` on an unknown text."""
        out = np.empty(len(responses), dtype=np.int64)
        for i, text in enumerate(responses):
            a = self._action_of_text.get(text)
            if a is None:
                raise ValueError(
                    f"judge {self.name}: response {i} is {text!r}, not one of the game's action texts "
                    f"{list(self.texts)}"
                )
            out[i] = a
        return out

    def actions_of_ids(self, token_ids: Any) -> np.ndarray:
        """The action index of each token id, shape (B,) int64; ``ValueError`` on an id outside the game."""
        flat = np.asarray(token_ids.tolist() if hasattr(token_ids, "tolist") else token_ids).reshape(-1)
        out = np.empty(flat.shape[0], dtype=np.int64)
        for i, t in enumerate(flat.tolist()):
            a = self._action_of_id.get(int(t))
            if a is None:
                raise ValueError(
                    f"judge {self.name}: token id {t} at row {i} is not one of the game's token_ids "
                    f"{list(self.token_ids)}"
                )
            out[i] = a
        return out

    def _prob(self, prompts: Sequence[Prompt], first: Sequence[str], second: Sequence[str]) -> Any:
        import torch

        a, b = self.actions(first), self.actions(second)  # (B,), (B,)
        return torch.from_numpy(self.game.P[a, b]).float()  # (B,)

    def prob_ids(self, first_ids: Any, second_ids: Any) -> torch.Tensor:
        """P(first > second) (B,) float32 for token ids (ints, a list or a (B,) / (B, 1) tensor)."""
        import torch

        a, b = self.actions_of_ids(first_ids), self.actions_of_ids(second_ids)  # (B,), (B,)
        if a.shape != b.shape:
            raise ValueError(f"judge {self.name}: {a.shape[0]} first ids but {b.shape[0]} second ids")
        return torch.from_numpy(self.game.P[a, b]).float()  # (B,)
