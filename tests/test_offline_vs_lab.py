"""The real offline trainer on the PsiPO bandit, checked against the exact answers of ``nlhf.lab``.

The policy is :class:`nlhf.models.tabular.TabularLM` (pi = softmax(theta) over single-token
responses, in the causal-LM interface), trained by :func:`nlhf.train.dpo.run_offline`
itself: tokenizer, collation, log-probs, the cached reference, the loss registry, the
shared loop and AdamW. Dataset D1 = {(a > b), (b > c), (a > c)}, uniform reference
(THEORY.md Sec. 5; PsiPO Sec. 5.4). Every run uses the whole dataset as its batch, so the
trainer minimises the dataset loss itself; a cosine schedule lets Adam settle.

* IPO converges to the lab's optimum: theta gaps 1/(3 tau) (``ipo_dataset_optimum``), for
  tau in {0.1, 0.5, 1}; with soft labels p the targets are (p - 1/2)/tau; with the MEAN
  reduction (two completion tokens: the action and EOS) h is halved and the gaps double.
* DPO collapses as in the lab: towards (1, 0, 0) whatever tau, further with more steps.
* ``kl_ref`` (evaluation) equals the exact KL(pi || mu) of the lab.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nlhf.data import PreferenceExample
from nlhf.lab.psipo import bandit_dataset, ipo_dataset_optimum, psipo_optimum
from nlhf.models.tabular import NEG, TabularConfig, TabularLM, action_probs, tabular_lm, tabular_tokenizer
from nlhf.train.config import LoopConfig, OptimConfig
from nlhf.train.dpo import OfflineConfig, run_offline

ACTIONS, D1 = bandit_dataset("D1")  # ("a", "b", "c"), [(0, 1), (1, 2), (0, 2)]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one torch thread (tests/conftest.py)."""


def d1_examples(label: float = 1.0) -> list[PreferenceExample]:
    return [PreferenceExample("x", ACTIONS[w], ACTIONS[l], label=label) for w, l in D1]


def train(
    tmp_path, loss, tau, steps, lr=0.2, schedule="cosine", label=1.0, reduction="sum", eval_examples=None
):
    cfg = OfflineConfig(
        loss=loss, tau=tau, reduction=reduction, out=str(tmp_path / f"{loss}-{tau}-{steps}-{reduction}-{label}"),
        optim=OptimConfig(lr=lr, max_grad_norm=0.0, schedule=schedule),
        loop=LoopConfig(max_steps=steps, micro_batch_size=3, log_every=10_000, progress=False,
                        tensorboard=False, min_free_disk_mb=1, eval_at_end=eval_examples is not None),
    )  # fmt: skip
    return run_offline(cfg, model=tabular_lm(3), tokenizer=tabular_tokenizer(ACTIONS),
                       train_examples=d1_examples(label), eval_examples=eval_examples)  # fmt: skip


def tv(p, q) -> float:
    return 0.5 * float(np.abs(np.asarray(p) - np.asarray(q)).sum())


# ----------------------------------------------------------------------------- the tabular model


def test_tabular_lm_scores_action_then_eos_as_softmax_theta():
    """log pi([x, a, EOS]) = log softmax(theta)[a] + log 1: the causal-LM view of pi = softmax(theta)."""
    from nlhf.data import collate_pairs, tokenize_pair
    from nlhf.logprobs import seq_logps, token_logps

    tok = tabular_tokenizer(ACTIONS)
    model = TabularLM.from_logits([1.0, 0.0, -2.0])
    pair = tokenize_pair(tok, PreferenceExample("x", "a", "c"))
    assert (pair.prompt_ids, pair.first_ids, pair.second_ids) == ([4], [0, 3], [2, 3])  # x=4, a=0, c=2, EOS=3
    batch = collate_pairs([pair], tok.pad_token_id)
    logits = model(batch.input_ids).logits  # (2, 3, 5)
    assert logits.shape == (2, 3, 5) and float(logits[0, 0, 3].detach()) == NEG
    tok_lp = token_logps(logits, batch.input_ids, batch.completion_mask)  # (2, 2)
    z = np.log(np.exp(1.0) + 1.0 + np.exp(-2.0))
    np.testing.assert_allclose(tok_lp.detach().numpy(), [[1.0 - z, 0.0], [-2.0 - z, 0.0]], atol=1e-6)
    seq = seq_logps(tok_lp, batch.completion_mask[:, 1:], "sum")
    np.testing.assert_allclose(seq.detach().numpy(), [1.0 - z, -2.0 - z], atol=1e-6)


def test_tabular_lm_saves_and_loads_and_keeps_contexts_apart(tmp_path):
    from nlhf.models.loading import load_causal_lm

    model = tabular_lm(3, n_prompts=2, logits=[[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]])
    tok = tabular_tokenizer(ACTIONS, prompts=("x", "y"))
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, tok2 = load_causal_lm(tmp_path)
    assert isinstance(loaded, TabularLM) and isinstance(loaded.config, TabularConfig)
    np.testing.assert_allclose(
        action_probs(loaded, 1), torch.softmax(torch.tensor([2.0, 1.0, 0.0]), -1), atol=1e-7
    )
    ids = torch.tensor([[tok2("y")["input_ids"][0], 0, 3]])  # (1, 3): y, a, EOS
    logits = loaded(ids).logits[0]
    np.testing.assert_allclose(logits[0, :3].detach(), [2.0, 1.0, 0.0])  # after prompt y: theta[1]
    assert torch.argmax(logits[1]) == 3  # after an action: EOS


# ----------------------------------------------------------------------------- IPO against the lab


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_offline_ipo_converges_to_the_lab_optimum(tmp_path, tau):
    """IPO on D1: theta_a - theta_b = theta_b - theta_c = 1/(3 tau); TV to the lab optimum <= 0.02 (in fact ~1e-6)."""
    result = train(tmp_path, "ipo", tau, steps=150)
    pi = action_probs(result.policy).numpy()
    want = ipo_dataset_optimum(D1, 3, tau)
    assert tv(pi, want) <= 0.02
    assert tv(pi, want) <= 1e-3  # full-batch training minimises the dataset loss: much closer than asked
    theta = np.log(pi)
    np.testing.assert_allclose(np.diff(-theta), [1 / (3 * tau)] * 2, rtol=1e-2)


def test_offline_ipo_soft_labels_and_mean_reduction_change_tau_as_documented(tmp_path):
    """Soft label p: targets (p - 1/2)/tau, so p = 3/4 at tau is the hard-label optimum at 2 tau.

    MEAN reduction: a response is 2 tokens (action, EOS), h_mean = h / 2, so mean-IPO at tau is
    sum-IPO at tau / 2 (THEORY.md Sec. 5: TRL's length-normalised IPO changes what tau means).
    """
    tau = 0.5
    soft = action_probs(train(tmp_path, "ipo", tau, steps=150, label=0.75).policy).numpy()
    assert tv(soft, ipo_dataset_optimum(D1, 3, 2 * tau)) <= 1e-3
    mean = action_probs(train(tmp_path, "ipo", tau, steps=150, reduction="mean").policy).numpy()
    assert tv(mean, ipo_dataset_optimum(D1, 3, tau / 2)) <= 1e-3
    assert tv(mean, ipo_dataset_optimum(D1, 3, tau)) > 0.1


def test_eval_kl_ref_is_the_exact_kl_to_the_reference(tmp_path):
    result = train(tmp_path, "ipo", 0.5, steps=40, eval_examples=d1_examples())
    pi = action_probs(result.policy).numpy()
    exact = float(np.sum(pi * np.log(pi * 3)))  # KL(pi || uniform)
    assert result.summary["eval"]["kl_ref"] == pytest.approx(exact, rel=1e-5)
    assert exact > 0.1


# ----------------------------------------------------------------------------- DPO against the lab


def test_offline_dpo_collapses_as_in_the_lab(tmp_path):
    """DPO on D1 heads for the lab's DPO optimum (1, 0, 0) for every tau, and keeps going with more steps."""
    for tau in (0.1, 1.0):
        lab = psipo_optimum(np.array([[0.5, 1, 1], [0, 0.5, 1], [0, 0, 0.5]]), np.full(3, 1 / 3),
                            np.full(3, 1 / 3), tau, psi="logit")  # fmt: skip
        np.testing.assert_allclose(lab, [1, 0, 0])
        short = action_probs(
            train(tmp_path, "dpo", tau, steps=60, lr=0.1, schedule="constant").policy
        ).numpy()
        long = action_probs(
            train(tmp_path, "dpo", tau, steps=120, lr=0.1, schedule="constant").policy
        ).numpy()
        assert long[0] > 0.95
        assert long[0] > short[0] and long[2] < short[2]  # still moving towards (1, 0, 0)
        assert tv(long, lab) < tv(short, lab)
        # IPO at the same tau stays regularised
        ipo = ipo_dataset_optimum(D1, 3, tau)
        assert ipo[0] < long[0] and ipo[2] > 1e-3
