"""The general preference model (nlhf.models.general_preference): equation (1) by hand, exact symmetry, a
Condorcet cycle represented exactly where a reward cannot, batching and deduplication, save / load."""

import json

import numpy as np
import pytest
import torch

from nlhf.envs import default_rater_population
from nlhf.models.general_preference import GeneralPreferenceModel, general_preference_logit
from nlhf.models.loading import ModelLoadError


def test_logit_by_hand_and_antisymmetric():
    """k = 1: v_a = (1, 2, 3), v_b = (0.5, -1, 4): (1 - 0.5) + (2 * 4 - 3 * (-1)) = 11.5; swapped: -11.5."""
    a = torch.tensor([[1.0, 2.0, 3.0]])
    b = torch.tensor([[0.5, -1.0, 4.0]])
    assert general_preference_logit(a, b).item() == pytest.approx(11.5)
    assert general_preference_logit(b, a).item() == pytest.approx(-11.5)
    assert general_preference_logit(a, a).item() == 0.0
    v = torch.randn(7, 5, generator=torch.Generator().manual_seed(0))  # k = 2, random
    w = torch.randn(7, 5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(general_preference_logit(v, w), -general_preference_logit(w, v))
    with pytest.raises(ValueError, match="1 \\+ 2k"):
        general_preference_logit(torch.zeros(2, 4), torch.zeros(2, 4))


def _fit_free_embeddings(P, rank: int, steps: int = 3000) -> np.ndarray:
    """Free embeddings (n, 1 + 2 rank) fitted by Adam to the cross-entropy against P (every ordered pair)."""
    n = P.shape[0]
    target = torch.tensor(P, dtype=torch.float64)
    v = torch.nn.Parameter(
        0.1 * torch.randn(n, 1 + 2 * rank, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    )
    opt = torch.optim.Adam([v], lr=0.05)
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    for _ in range(steps):
        logits = general_preference_logit(v[i.flatten()], v[j.flatten()]).view(n, n)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return torch.sigmoid(general_preference_logit(v[i.flatten()], v[j.flatten()]).view(n, n)).numpy()


def test_free_embeddings_represent_the_demo_cycle_exactly_and_a_reward_cannot():
    """The demo environment's 4-class P* (a Condorcet cycle plus a class that loses to all): rank k = 2 on free
    embeddings reproduces every entry to 1e-3; k = 0 (a Bradley-Terry reward) misses the cycle by more than 0.1."""
    P = default_rater_population().P
    fitted = _fit_free_embeddings(P, rank=2)
    assert np.max(np.abs(fitted - P)) < 1e-3
    reward_only = _fit_free_embeddings(P, rank=0)
    assert np.max(np.abs(reward_only - P)) > 0.1


def test_prob_is_symmetric_and_deduplicates_responses(tiny_bert):
    """P(a > b) + P(b > a) = 1 and P(a > a) = 1/2 for random weights; prob() encodes each distinct (prompt,
    response) once and equals the plain two-row forward on every pair."""
    bert, tok = tiny_bert
    model = GeneralPreferenceModel(bert, tok, rank=2).eval()
    torch.nn.init.normal_(model.head.weight, std=1.0)
    prompts = ["What is water?"] * 3 + ["Name a colour."] * 3
    first = ["It is H2O.", "Water is wet", "I like it!", "Blue.", "Red", "A colour"]
    second = ["Water is wet", "It is H2O.", "I like it!", "Red", "Blue.", "Blue."]
    p_ab = model.prob(prompts, first, second)
    p_ba = model.prob(prompts, second, first)
    torch.testing.assert_close(p_ab + p_ba, torch.ones(6), atol=1e-6, rtol=0)
    assert p_ab[2].item() == 0.5  # the same response on both sides
    assert not torch.allclose(p_ab, torch.full((6,), 0.5), atol=1e-3)  # random weights: not all ties
    calls = []
    original = model.embed
    model.embed = lambda *a, **k: calls.append(a[0].shape[0]) or original(*a, **k)
    model.prob(prompts, first, second)
    assert sum(calls) == 6  # 12 response slots, 3 distinct responses a prompt
    enc = model.encode(prompts + prompts, first + second)
    with torch.no_grad():
        direct = torch.sigmoid(model(enc["input_ids"], enc["attention_mask"], enc["segment_ids"]))
    torch.testing.assert_close(p_ab, direct, atol=1e-6, rtol=0)


def test_save_load_round_trip_and_a_bad_rank_names_the_file(tmp_path, tiny_bert):
    from nlhf.judges import PreferenceModelJudge, load_judge
    from nlhf.models import load_scorer

    bert, tok = tiny_bert
    model = GeneralPreferenceModel(bert, tok, rank=3).eval()
    torch.nn.init.normal_(model.head.weight, std=1.0)
    model.save_pretrained(tmp_path / "gpm")
    meta = json.loads((tmp_path / "gpm" / "nlhf_head.json").read_text())
    assert meta["kind"] == "general_preference" and meta["rank"] == 3
    again = load_scorer(tmp_path / "gpm")
    assert isinstance(again, GeneralPreferenceModel) and again.rank == 3
    args = (["Q?", "Q?"], ["yes", "no way"], ["no way", "maybe"])
    torch.testing.assert_close(again.prob(*args), model.prob(*args))
    judge = load_judge(str(tmp_path / "gpm"), 8)
    assert isinstance(judge, PreferenceModelJudge)
    torch.testing.assert_close(judge.prob(*args), model.prob(*args))
    meta["rank"] = -1
    (tmp_path / "gpm" / "nlhf_head.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="nlhf_head.json.*rank"):
        load_scorer(tmp_path / "gpm")
    with pytest.raises(ValueError, match="rank"):
        GeneralPreferenceModel(bert, tok, rank=-2)
