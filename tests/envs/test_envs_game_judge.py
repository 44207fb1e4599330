"""GameJudge: a lab PreferenceGame over single-token responses (for issue 5's lab checks)."""

import numpy as np
import pytest
import torch

from nlhf.envs import GameJudge
from nlhf.judges import Judge, SymmetrizedJudge
from nlhf.lab import random_game, rock_paper_scissors
from nlhf.models.tiny import tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_maps_decoded_tokens_to_actions(tok):
    """Actions rock, paper, scissors are the tokens of "r", "p", "s"; paper beats rock."""
    ids = [tok.convert_tokens_to_ids(c) for c in ("r", "p", "s")]
    judge = GameJudge(rock_paper_scissors(), ids, tok)
    assert isinstance(judge, Judge)
    assert judge.texts == ("r", "p", "s")
    p = judge.prob(["x"] * 4, ["p", "r", "s", "r"], ["r", "p", "p", "r"])
    torch.testing.assert_close(p, torch.tensor([1.0, 0.0, 1.0, 0.5]))
    # the text the trainers pass in is exactly what Rollout.response_texts decodes
    row = torch.tensor([ids[1]])
    assert judge.prob(["x"], [tok.decode(row, skip_special_tokens=True)], ["s"]).item() == 0.0
    torch.testing.assert_close(
        judge.prob_ids(torch.tensor([[ids[2]], [ids[0]]]), [ids[1], ids[1]]), torch.tensor([1.0, 0.0])
    )
    np.testing.assert_array_equal(judge.actions_of_ids(ids[::-1]), [2, 1, 0])


def test_every_pair_of_a_random_game(tok):
    game = random_game(5, seed=3)
    ids = [tok.convert_tokens_to_ids(c) for c in "abcde"]
    judge = GameJudge(game, ids, tok)
    a, b = np.meshgrid(np.arange(5), np.arange(5), indexing="ij")
    p = judge.prob(["x"] * 25, ["abcde"[i] for i in a.ravel()], ["abcde"[j] for j in b.ravel()])
    torch.testing.assert_close(p, torch.tensor(game.P.ravel(), dtype=torch.float32))
    sym = SymmetrizedJudge(judge).prob(
        ["x"] * 25, ["abcde"[i] for i in a.ravel()], ["abcde"[j] for j in b.ravel()]
    )
    torch.testing.assert_close(sym, p)  # a game is symmetric already


def test_texts_without_a_tokenizer():
    judge = GameJudge([[0.5, 0.9], [0.1, 0.5]], [7, 9], texts=["yes", "no"])
    assert judge.prob(["q"], ["no"], ["yes"]).item() == pytest.approx(0.1)
    assert judge.prob_ids([7], [9]).item() == pytest.approx(0.9)


def test_errors_name_the_problem(tok):
    rps = rock_paper_scissors()
    ids = [tok.convert_tokens_to_ids(c) for c in ("r", "p", "s")]
    judge = GameJudge(rps, ids, tok)
    with pytest.raises(ValueError, match=r"response 1 is 'x', not one of the game's action texts"):
        judge.prob(["q", "q"], ["r", "x"], ["p", "p"])
    with pytest.raises(ValueError, match="response 0 is 'rp'"):
        judge.prob(["q"], ["rp"], ["p"])  # two tokens
    with pytest.raises(ValueError, match="token id 5 at row 1"):
        judge.prob_ids([ids[0], 5], [ids[1], ids[1]])
    with pytest.raises(ValueError, match="3 token_ids for a game with 2 actions"):
        GameJudge([[0.5, 0.5], [0.5, 0.5]], ids, tok)
    with pytest.raises(ValueError, match="plays more than one action"):
        GameJudge(rps, [ids[0], ids[0], ids[1]], tok)
    with pytest.raises(ValueError, match="decodes to an empty text"):
        GameJudge(rps, [ids[0], ids[1], tok.eos_token_id], tok)
    with pytest.raises(ValueError, match="both decode to 'a'"):
        GameJudge(rps, [1, 2, 3], texts=["a", "b", "a"])
    with pytest.raises(ValueError, match="give a tokenizer"):
        GameJudge(rps, [1, 2, 3])
