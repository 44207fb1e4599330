"""The online trainers (``nlhf.train.nash_md``, ``nlhf.train.online_ipo``, ``nlhf.train.rlhf``) on the tiny random Llama.

Every family end to end for a few steps (policy saved and reloadable, metrics with known
values at the first step), learning in the right direction against a length judge,
gradient-accumulation invariance of Nash-MD-PG, and config errors naming the key. Exact
resume and the command line are in ``test_online_resume_cli.py``; the trainers against the
exact answers of the lab in ``tests/test_online_vs_lab.py``.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from online_family import (  # tests/ (conftest.py)
    ONLINE_ALGORITHMS,
    OnlineConfig,
    load_online_config,
    run_online,
)

from nlhf.config import ConfigError, resolve_config
from nlhf.judges import CallableJudge
from nlhf.models.tiny import tiny_causal_lm, tiny_tokenizer
from nlhf.sampling import SamplingConfig
from nlhf.sampling.streams import row_seeds
from nlhf.train.config import LoopConfig, OptimConfig
from nlhf.train.rlhf import RLHFConfig, run_rlhf


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one torch thread (tests/conftest.py)."""


PROMPTS = [
    "Hi",
    "What is 2 + 2?",
    "Name a colour",
    "Say yes",
    "Count to three",
    "?",
    "Capital of France?",
    "Why",
]


def shorter_is_better(prompt, first, second) -> float:
    """P(first > second) = 1 if first is shorter, 0 if longer, 1/2 if as long (symmetric by construction)."""
    return 0.5 if len(first) == len(second) else float(len(first) < len(second))


LENGTH_JUDGE = CallableJudge(shorter_is_better, name="shorter_is_better")


def text_score(text: str) -> float:
    return (sum(map(ord, text)) % 97) / 10.0


TEXT_SCORE_JUDGE = CallableJudge(
    lambda prompt, first, second: 1.0 / (1.0 + math.exp(text_score(second) - text_score(first))),
    name="text_score",
)


def minus_length(prompts, responses):
    return torch.tensor([-len(r) / 8.0 for r in responses])


def loop_cfg(**kw) -> LoopConfig:
    base = dict(
        max_steps=1, micro_batch_size=4, log_every=1, progress=False, tensorboard=False, min_free_disk_mb=1
    )
    base.update(kw)
    return LoopConfig(**base)


def online_cfg(tmp_path, name="run", loop=None, optim=None, sampling=None, **kw) -> OnlineConfig:
    return OnlineConfig(
        out=str(tmp_path / name),
        sampling=SamplingConfig(**{"max_new_tokens": 6, **(sampling or {})}),
        optim=OptimConfig(**{"lr": 1e-3, "max_grad_norm": 0.0, "schedule": "constant", **(optim or {})}),
        loop=loop_cfg(**(loop or {})),
        **kw,
    )


def rlhf_cfg(tmp_path, name="run", loop=None, optim=None, sampling=None, **kw) -> RLHFConfig:
    return RLHFConfig(
        out=str(tmp_path / name),
        sampling=SamplingConfig(**{"max_new_tokens": 6, **(sampling or {})}),
        optim=OptimConfig(**{"lr": 1e-3, "max_grad_norm": 0.0, "schedule": "constant", **(optim or {})}),
        loop=loop_cfg(**{"micro_batch_size": 2, **(loop or {})}),
        **kw,
    )


def tiny(seed=0):
    tok = tiny_tokenizer()
    return tiny_causal_lm(tokenizer=tok, seed=seed), tok


def params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# ----------------------------------------------------------------------------- every family, end to end


@pytest.mark.parametrize("algorithm", ONLINE_ALGORITHMS)
def test_online_family_end_to_end_on_tiny_llama(tmp_path, algorithm):
    """Two steps; at step 0 pi = mu, so the KL estimates on pi's samples are 0; the saved policy reloads."""
    from nlhf.models.loading import load_causal_lm

    model, tok = tiny()
    before = params(model)
    cfg = online_cfg(tmp_path, algorithm=algorithm, tau=0.1, loop=dict(max_steps=2, log_every=1))
    result = run_online(cfg, model=model, tokenizer=tok, judge=LENGTH_JUDGE, train_prompts=PROMPTS,
                        eval_prompts=PROMPTS[:4])  # fmt: skip
    s = result.summary
    assert s["algorithm"] == algorithm and s["steps"] == 2 and s["updates"] == 2
    assert s["mixture_coef"] == {
        "nash_md": 0.125,
        "self_play": 0.0,
        "best_response": 1.0,
        "ipo_md": 0.125,
    }.get(algorithm)
    lines = [json.loads(x) for x in (result.out_dir / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in lines if r["split"] == "train" and r["step"] == 1)
    # step 0 runs with pi = mu: log pi - log mu = 0 on every token (up to the cached-vs-full forward rounding)
    assert abs(first["kl_k1"]) < 1e-4 and abs(first["kl_k3"]) < 1e-8
    assert 0.0 <= first["win_rate"] <= 1.0
    assert 1.0 <= first["length"] <= 6.0 and 0.0 <= first["truncated"] <= 1.0
    ev = s["eval"]
    assert 0.0 <= ev["win_rate_vs_ref"] <= 1.0 and ev["loss"] == 0.0
    # the update happened and the saved policy is the trained one
    after = params(result.policy)
    assert any(not torch.equal(before[n], after[n]) for n in before)
    saved, saved_tok = load_causal_lm(result.policy_dir)
    ids = torch.tensor([tok("Hi there")["input_ids"]])
    torch.testing.assert_close(saved(ids).logits, result.policy(ids).logits)
    assert (result.out_dir / "metrics.json").is_file() and (result.out_dir / "config.yaml").is_file()
    if (
        algorithm == "nash_ema"
    ):  # two EMA updates (one per optimiser step): strictly between theta_0 and theta_2
        ema = result.opponent.state_dict()
        assert ema["updates"] == 2 and set(ema["params"]) == set(before)
        name = "model.embed_tokens.weight"
        moved = (after[name] - before[name]).abs()
        ema_moved = (ema["params"][name] - before[name]).abs()
        assert float(moved.max()) > 0 and 0 < float(ema_moved.max()) < 0.1 * float(moved.max())


@pytest.mark.parametrize("algorithm", ["ppo", "rlhf_pg"])
def test_rlhf_family_end_to_end_on_tiny_llama(tmp_path, algorithm):
    model, tok = tiny()
    before = params(model)
    calls = []

    def reward_fn(prompts, responses):
        calls.append(minus_length(prompts, responses))
        return calls[-1]

    cfg = rlhf_cfg(tmp_path, algorithm=algorithm, tau=0.1, group_size=3, loop=dict(max_steps=3),
                   **({"ppo_epochs": 2} if algorithm == "ppo" else {}))  # fmt: skip
    result = run_rlhf(cfg, model=model, tokenizer=tok, reward_fn=reward_fn, train_prompts=PROMPTS,
                      eval_prompts=PROMPTS[:2])  # fmt: skip
    s = result.summary
    assert s["steps"] == 3 and s["updates"] == 3 and s["group_size"] == 3
    lines = [json.loads(x) for x in (result.out_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if r["split"] == "train"]
    assert abs(train[0]["kl_k1"]) < 1e-4  # pi = mu at step 0
    # 2 prompts x group_size 3 = 6 responses per step; eval: 2 prompts x (pi, mu) = 2 calls of 2
    train_calls = [c for c in calls if c.shape[0] == 6]
    assert len(train_calls) == (2 if algorithm == "ppo" else 3)
    assert train[0]["reward"] == pytest.approx(float(train_calls[0].mean()), abs=1e-6)
    assert train[-1]["reward"] == pytest.approx(float(train_calls[-1].mean()), abs=1e-6)
    if algorithm == "ppo":
        # step 0 samples (ratio 1 exactly), step 1 reuses the rollouts of step 0 (same reward), step 2 samples anew
        assert train[0]["ratio"] == pytest.approx(1.0, abs=1e-6) and train[0]["clip_fraction"] == 0.0
        assert train[1]["reward"] == train[0]["reward"] and train[1]["length"] == train[0]["length"]
        assert train[1]["ratio"] != 1.0
    assert any(not torch.equal(before[n], p) for n, p in params(result.policy).items())
    assert "reward_vs_ref" in s["eval"]


def test_nash_md_learns_what_the_judge_prefers(tmp_path):
    """Against a judge that prefers shorter texts, the policy comes to beat the reference (a wrong sign loses)."""
    model, tok = tiny()
    cfg = online_cfg(tmp_path, algorithm="nash_md", mixture_coef=0.5, tau=0.01, optim=dict(lr=3e-2),
                     loop=dict(max_steps=20, micro_batch_size=8), sampling=dict(max_new_tokens=8))  # fmt: skip
    untrained = online_cfg(tmp_path, "untrained", algorithm="nash_md", mixture_coef=0.5, tau=0.01,
                           optim=dict(lr=1e-12), loop=dict(max_steps=1, micro_batch_size=8),
                           sampling=dict(max_new_tokens=8))  # fmt: skip
    base = run_online(untrained, model=tiny()[0], tokenizer=tok, judge=LENGTH_JUDGE, train_prompts=PROMPTS,
                      eval_prompts=PROMPTS)  # fmt: skip
    result = run_online(cfg, model=model, tokenizer=tok, judge=LENGTH_JUDGE, train_prompts=PROMPTS,
                        eval_prompts=PROMPTS)  # fmt: skip
    assert 0.2 <= base.summary["eval"]["win_rate_vs_ref"] <= 0.8  # pi = mu: a coin flip, up to sampling
    assert result.summary["eval"]["win_rate_vs_ref"] >= 0.9
    assert result.summary["eval"]["kl_k3"] > 1.0  # it had to move away from mu to do so


# ----------------------------------------------------------------------------- accumulation invariance


def sgd(model):
    """Plain SGD (lr 0.01): the update is minus 0.01 x the accumulated, normalised gradient."""
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)


def peaked_tiny(seed=0):
    """The tiny Llama with a scaled output layer: its greedy tokens have probabilities ~0.2-0.9, not ~1/259."""
    model, tok = tiny(seed)
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)
    return model, tok


def test_nash_md_gradient_accumulation_is_invariant(tmp_path, monkeypatch):
    """1 micro-batch of 8 prompts, 4 of 2 and 8 of 1 give the same update, with random samples.

    Each prompt row samples from its own stream seeded by its global position
    (:func:`nlhf.sampling.streams.row_seeds`), so the samples do not depend on how the batch is
    split. Greedy sampling (top_k=1) is checked too: the importance weight pi(y)/q(y) = pi(y)
    then enters the loss, which the peaked model keeps away from 0. The reference is another
    model, so that y (from pi) and y' (from the mixture) differ from the first step.
    Negative control: one ``torch.Generator`` per micro-batch (the previous scheme) draws
    other samples for 8 micro-batches than for one batch of 8.
    """
    from nlhf.sampling import streams
    from nlhf.sampling.decode import make_generator

    def train(micro, accum, top_k, name):
        model, tok = peaked_tiny(0)
        cfg = online_cfg(tmp_path, name, algorithm="nash_md", mixture_coef=0.5, tau=0.2,
                         sampling=dict(max_new_tokens=3, top_k=top_k),
                         loop=dict(max_steps=2, micro_batch_size=micro, grad_accum_steps=accum))  # fmt: skip
        before = params(model)
        result = run_online(cfg, model=model, tokenizer=tok, judge=TEXT_SCORE_JUDGE, train_prompts=PROMPTS,
                            optimizer_fn=sgd, reference_model=peaked_tiny(1)[0])  # fmt: skip
        logged = [json.loads(x) for x in (result.out_dir / "metrics.jsonl").read_text().splitlines()]
        return before, params(result.policy), logged

    for top_k in (0, 1):
        before, ref, ref_metrics = train(8, 1, top_k, f"a{top_k}")
        moved = max(float((ref[n] - before[n]).abs().max()) for n in ref)
        assert moved > 1e-3  # a real update, not an invariance of zero
        assert (
            abs(ref_metrics[0]["win_rate"] - 0.5) > 0.01 and ref_metrics[0]["kl_k1"] > 0.1
        )  # both terms at work
        for micro, accum in ((2, 4), (1, 8)):
            _, other, metrics = train(micro, accum, top_k, f"{micro}x{accum}-{top_k}")
            gap = max(float((other[n] - ref[n]).abs().max()) for n in ref)
            assert gap <= 1e-4 * moved, (
                micro,
                accum,
                top_k,
                gap,
                moved,
            )  # float32 rounding of other batch shapes (measured up to 1.2e-5 x moved on an AVX-512 CPU)
            keys = ("loss", "win_rate", "kl_k1", "length") + (("importance_weight",) if top_k else ())
            for step in (0, 1):
                for m in keys:
                    assert metrics[step][m] == pytest.approx(ref_metrics[step][m], rel=1e-5, abs=1e-7)

    # negative control: one generator per micro-batch, seeded by its first position
    monkeypatch.setattr(
        streams, "row_generator", lambda seed, ctx, device: make_generator(seed + ctx.positions[0], device)
    )
    _, one_batch, _ = train(8, 1, 0, "neg-a")
    _, eight_batches, _ = train(1, 8, 0, "neg-b")
    assert max(float((one_batch[n] - eight_batches[n]).abs().max()) for n in one_batch) > 1e-3


# ----------------------------------------------------------------------------- config and seeding


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["tau=0"], "tau"),
        (["tau=-1"], "tau"),
        (["mixture_coef=1.5"], "mixture_coef"),
        (["mixture_coef=-0.1"], "mixture_coef"),
        (["algorithm=self_play", "mixture_coef=0.5"], "mixture_coef"),
        (["algorithm=online_ipo", "mixture_coef=0.5"], "mixture_coef"),
        (["algorithm=ipo_md", "sampling.temperature=0.7"], "sampling.temperature"),
        (["ema_decay=1.0"], "ema_decay"),
        (["sampling.top_p=0"], "sampling.top_p"),
        (["algorithm=nash_mdd"], "algorithm"),
        (["taus=0.1"], "taus"),
    ],
)
def test_online_config_errors_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=rf"\b{key}\b"):
        load_online_config(None, overrides)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["group_size=1"], "group_size"),
        (["algorithm=rlhf_pg", "ppo_epochs=3"], "ppo_epochs"),
        (["clip_eps=1.5"], "clip_eps"),
        (["tau=0"], "tau"),
    ],
)
def test_rlhf_config_errors_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=rf"\b{key}\b"):
        resolve_config(RLHFConfig, None, overrides)


def test_mixture_coef_defaults_per_algorithm():
    assert OnlineConfig(algorithm="nash_md").beta == 0.125
    assert OnlineConfig(algorithm="nash_md", mixture_coef=0.5).beta == 0.5
    assert OnlineConfig(algorithm="self_play").beta == 0.0
    assert OnlineConfig(algorithm="best_response", mixture_coef=1.0).beta == 1.0
    assert OnlineConfig(algorithm="ipo_md", mixture_coef=0.25).beta == 0.25
    assert RLHFConfig(algorithm="ppo").epochs == 4 and RLHFConfig(algorithm="rlhf_pg").epochs == 1


def test_row_seeds_depend_on_seed_and_each_rows_stream_position_only():
    """A row's seed is a function of (seed, its global position): not of its micro-batch, step or process."""
    from nlhf.train.loop import StepContext

    a = StepContext(step=3, micro_step=1, indices=(5, 2), positions=(10, 11))
    same_position = StepContext(step=7, micro_step=0, indices=(1, 0), positions=(10, 11), process_index=1)
    assert row_seeds(0, a) == row_seeds(0, same_position)
    assert len(set(row_seeds(0, a))) == 2  # two rows, two streams
    halves = row_seeds(0, StepContext(3, 0, (5,), (10,))) + row_seeds(0, StepContext(3, 0, (2,), (11,), 1))
    assert halves == row_seeds(0, a)  # split over two micro-batches / processes: the same seeds
    assert row_seeds(0, a) != row_seeds(1, a)
    assert row_seeds(0, a)[1] not in row_seeds(0, StepContext(3, 1, (5, 2), (12, 13)))
    evaluation = StepContext(step=3, micro_step=0, indices=(10, 11), positions=(10, 11), training=False)
    assert not set(row_seeds(0, evaluation)) & set(row_seeds(0, a))
    assert all(0 <= s < 2**63 for s in row_seeds(2**40, a))
