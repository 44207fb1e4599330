"""The offline trainer (``nlhf.train.dpo``) on the tiny random Llama.

Gradient accumulation, the reference computed once, prompt sharing, labels, LoRA and the
saved policy. Resume and the command line are in ``test_offline_resume_cli.py``.
"""

from __future__ import annotations

import pytest
import torch

from nlhf.data import PreferenceExample
from nlhf.models.tiny import tiny_causal_lm, tiny_tokenizer
from nlhf.train import dpo, pair_logps, ref_cache
from nlhf.train.config import LoopConfig, OptimConfig
from nlhf.train.dpo import OfflineConfig, run_offline
from nlhf.train.loop import StepOutput


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one torch thread (tests/conftest.py)."""


# Eight pairs; prompts and responses of unequal lengths (1 to 38 bytes = tokens, + EOS).
PAIRS = [
    PreferenceExample("Hi", "Hello there, how are you today?", "No."),
    PreferenceExample("What is 2 + 2?", "4", "It is five, or maybe twenty-two"),
    PreferenceExample("Name a colour", "Blue", "I will not name one"),
    PreferenceExample("Say yes", "yes", "n"),
    PreferenceExample("Translate 'chat' to English", "cat", "The word chat is French for a conversation"),
    PreferenceExample("Count to three", "1, 2, 3", "one"),
    PreferenceExample("?", "A question mark with nothing else.", "?"),
    PreferenceExample("Capital of France?", "Paris", "Lyon, I believe, or Marseille"),
]


def config(tmp_path, name="run", **kw) -> OfflineConfig:
    loop = dict(
        max_steps=1, micro_batch_size=8, log_every=1, progress=False, tensorboard=False, min_free_disk_mb=1
    )
    loop.update(kw.pop("loop", {}))
    optim = dict(lr=1e-3, max_grad_norm=0.0, schedule="constant")
    optim.update(kw.pop("optim", {}))
    return OfflineConfig(out=str(tmp_path / name), optim=OptimConfig(**optim), loop=LoopConfig(**loop), **kw)


def run(cfg, examples=PAIRS, seed=0, **kw):
    tok = tiny_tokenizer()
    model = tiny_causal_lm(tokenizer=tok, seed=seed)
    return run_offline(cfg, model=model, tokenizer=tok, train_examples=examples, **kw)


def params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def initial_params(seed=0) -> dict[str, torch.Tensor]:
    return params(tiny_causal_lm(tokenizer=tiny_tokenizer(), seed=seed))


def sgd(model):
    """Plain SGD: the update is -lr x the accumulated gradient (AdamW's first step is about lr x sign(g))."""
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)


def token_weighted_micro_mean(cfg, sharing=None, _real=dpo.make_step):
    """A WRONG step: each micro-batch returns its own token-weighted mean loss with weight 1.

    This is what a per-token-normalised loss divided by ``grad_accum_steps`` computes: a
    mean of micro-batch means. With one pair per micro-batch the lengths cancel; with eight
    they weight the pairs, so 1 x 8 and 8 x 1 disagree when lengths differ.
    """
    real = _real(cfg, sharing)

    def step(model, batch, ctx):
        out = real(model, batch, ctx)
        B = batch["labels"].shape[0]
        rows = batch["completion_mask"].sum(dim=1).float()  # (2B,)
        tokens = rows[:B] + rows[B:]  # (B,) completion tokens of each pair
        loss = (out.losses * tokens).sum() / tokens.sum()
        return StepOutput(losses=loss.reshape(1), weights=torch.ones(1))

    return step


# ----------------------------------------------------------------------------- accumulation


def accumulated_update(tmp_path, name, micro, accum, loss="ipo", share_prompt=True):
    cfg = config(tmp_path, name, loss=loss, tau=0.5, share_prompt=share_prompt,
                 loop=dict(micro_batch_size=micro, grad_accum_steps=accum))  # fmt: skip
    after = params(run(cfg, optimizer_fn=sgd).policy)
    before = initial_params()
    return {n: after[n] - before[n] for n in after}


@pytest.mark.parametrize("loss", ["ipo", "dpo"])
def test_accumulation_1x8_equals_8x1_with_unequal_lengths(tmp_path, loss):
    """One step of 8 pairs as 1 micro-batch of 8 or as 8 micro-batches of 1: the same update.

    The loss of a step is the sum of per-pair losses over the global batch divided by the
    number of pairs (8), however the pairs are split; lengths vary from 1 to 38 tokens.
    """
    tok = tiny_tokenizer()
    lengths = {len(dpo.tokenize_examples(tok, [e], OfflineConfig())[0][0].first_ids) for e in PAIRS}
    assert len(lengths) >= 6  # the completion lengths really differ
    one_by_eight = accumulated_update(tmp_path, "a", micro=8, accum=1, loss=loss)
    eight_by_one = accumulated_update(tmp_path, "b", micro=1, accum=8, loss=loss)
    scale = max(d.abs().max() for d in one_by_eight.values())
    assert scale > 1e-2  # the step did something
    gap = max((one_by_eight[n] - eight_by_one[n]).abs().max() for n in one_by_eight)
    assert gap <= 1e-5 * scale  # float32 rounding (padding differs between the two layouts)


def test_accumulation_check_fails_for_a_mean_of_micro_batch_means(tmp_path, monkeypatch):
    """The same comparison with a mean of (token-weighted) micro-batch means: the updates differ."""
    monkeypatch.setattr(dpo, "make_step", token_weighted_micro_mean)
    one_by_eight = accumulated_update(tmp_path, "a", micro=8, accum=1)
    eight_by_one = accumulated_update(tmp_path, "b", micro=1, accum=8)
    gap = max((one_by_eight[n] - eight_by_one[n]).abs().max() for n in one_by_eight)
    scale = max(d.abs().max() for d in one_by_eight.values())
    assert gap > 0.05 * scale


# ----------------------------------------------------------------------------- the reference, once


class ForwardCounter:
    """Counts forwards of a model and of its deep copies (the hook travels with ``deepcopy``)."""

    def __init__(self) -> None:
        self.no_grad_calls = 0
        self.no_grad_rows = 0
        self.grad_calls = 0

    def __call__(self, module, args, kwargs):
        rows = kwargs["input_ids"].shape[0]
        if torch.is_grad_enabled():
            self.grad_calls += 1
        else:
            self.no_grad_calls += 1
            self.no_grad_rows += rows


@pytest.mark.parametrize("share_prompt", [True, False])
def test_reference_logps_are_computed_once_not_every_epoch(tmp_path, share_prompt):
    """3 epochs of 8 pairs (12 steps of 2): the reference sees each pair's rows exactly once, before step 1."""
    tok = tiny_tokenizer()
    model = tiny_causal_lm(tokenizer=tok, seed=0)
    counter = ForwardCounter()
    # a plain function (deepcopy keeps functions, but would copy a callable object): counts the copy too
    model.register_forward_pre_hook(
        lambda module, args, kwargs: counter(module, args, kwargs), with_kwargs=True
    )
    cfg = config(tmp_path, loss="dpo", share_prompt=share_prompt, ref_batch_size=3,
                 loop=dict(max_steps=None, epochs=3, micro_batch_size=2))  # fmt: skip
    result = run_offline(cfg, model=model, tokenizer=tok, train_examples=PAIRS)
    assert result.summary["steps"] == 12 and result.summary["share_prompt"] is share_prompt
    batches = 3  # ceil(8 pairs / 3 per reference forward)
    if share_prompt:  # a prompt forward (B rows) and a completion forward (2B rows) per batch / step
        assert counter.no_grad_calls == 2 * batches
        assert counter.no_grad_rows == 8 + 2 * 8
        assert counter.grad_calls == 2 * 12
    else:
        assert counter.no_grad_calls == batches
        assert counter.no_grad_rows == 2 * 8
        assert counter.grad_calls == 12
    assert result.summary["ref_logps"] == "computed"


def test_cached_reference_logps_equal_a_fresh_reference_forward(tmp_path):
    """The cache holds mu's SUM log-probs of (first, second) for every pair, as the plain forward gives them."""
    from nlhf.logprobs import completion_mask_from_lengths, seq_logps, token_logps

    cfg = config(tmp_path, loss="dpo")
    run(cfg)
    cache = torch.load(tmp_path / "run" / ref_cache.REF_CACHE, weights_only=True)["train"]  # (8, 2)
    tok = tiny_tokenizer()
    mu = tiny_causal_lm(tokenizer=tok, seed=0)
    pairs, _ = dpo.tokenize_examples(tok, PAIRS, cfg)
    for i, p in enumerate(pairs):
        for col in (0, 1):
            ids = torch.tensor([p.input_ids(col)])  # (1, T)
            mask = completion_mask_from_lengths(torch.tensor([len(p.prompt_ids)]),
                                                torch.tensor([ids.shape[1] - len(p.prompt_ids)]), ids.shape[1])  # fmt: skip
            with torch.no_grad():
                logits = mu(input_ids=ids).logits
            want = seq_logps(token_logps(logits, ids, mask), mask[:, 1:], "sum")
            torch.testing.assert_close(cache[i, col], want[0], rtol=1e-5, atol=1e-4)


# ----------------------------------------------------------------------------- prompt sharing


# Four pairs of equal lengths (no template: 5-token prompts, 4-token responses + EOS): no padding, no masks.
EQUAL = [PreferenceExample(f"ask {i}", f"ok {i}", f"no {i}") for i in range(4)]


@pytest.mark.parametrize("reduction, template, examples", [
    ("sum", True, PAIRS), ("mean", True, PAIRS), ("sum", False, PAIRS), ("sum", False, EQUAL),
])  # fmt: skip
def test_prompt_sharing_gives_the_plain_log_probs_and_gradients(reduction, template, examples):
    """Each prompt run once with a KV cache: the same (2B,) log-probs and gradients as 2B full rows.

    Without the chat template the prompt "?" is a single token: its row has no cached
    prompt part at all, next to prompts of up to 27 tokens (left padding). ``EQUAL`` has no
    padding at all (the models' unmasked causal path).
    """
    tok = tiny_tokenizer()
    if not template:
        tok.chat_template = None
    model = tiny_causal_lm(tokenizer=tok, seed=1).train()
    pairs, _ = dpo.tokenize_examples(tok, examples, OfflineConfig())
    ref = ref_cache.RefLogps()
    ref.table["train"] = torch.zeros(len(pairs), 2)
    batch = dpo.make_collate(tok.pad_token_id, ref, share_prompt=True)(
        [dpo.OfflineItem("train", i, p) for i, p in enumerate(pairs)]
    )
    lengths = batch["prompt_lengths"].tolist()
    if examples is EQUAL:
        assert len(set(lengths)) == 1 and len(set(batch["completion_lengths"].tolist())) == 1
    else:
        assert len(set(lengths)) > 4  # prompts of unequal lengths (left-padded)
        assert template or min(lengths) == 1
    sharing = pair_logps.prompt_sharing(model)
    assert sharing is not None
    plain = pair_logps.pair_logps(model, batch, reduction, None)  # (16,)
    shared = pair_logps.pair_logps(model, batch, reduction, sharing)
    torch.testing.assert_close(shared, plain, rtol=1e-5, atol=1e-4)
    g_plain = torch.autograd.grad(plain.sum(), list(model.parameters()))
    g_shared = torch.autograd.grad(shared.sum(), list(model.parameters()))
    for a, b in zip(g_plain, g_shared):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- labels


def test_dpo_turns_round_pairs_labelled_0_and_refuses_soft_labels():
    swapped = PreferenceExample("x", "bad", "good", label=0.0, source="f.jsonl:3")
    (fixed,) = dpo.prepare_examples([swapped], "dpo", "train")
    assert (fixed.first, fixed.second, fixed.label) == ("good", "bad", 1.0)
    soft = PreferenceExample("x", "a", "b", label=0.7, source="f.jsonl:9")
    with pytest.raises(ValueError, match=r"f\.jsonl:9: label 0\.7 .* loss=cdpo needs hard labels"):
        dpo.prepare_examples([soft], "cdpo", "train")
    assert dpo.prepare_examples([soft], "ipo", "train") == [soft]  # IPO keeps soft labels


def test_config_rejects_label_smoothing_outside_cdpo_and_a_bad_tau():
    from nlhf.config import ConfigError

    with pytest.raises(ConfigError, match="label_smoothing: is only used by loss=cdpo"):
        OfflineConfig(loss="dpo", label_smoothing=0.1)
    with pytest.raises(ConfigError, match="label_smoothing: must be in"):
        OfflineConfig(loss="cdpo", label_smoothing=0.5)
    with pytest.raises(ConfigError, match="tau: must be"):
        OfflineConfig(tau=0.0)


# ----------------------------------------------------------------------------- LoRA, saving, metrics


def test_lora_policy_is_saved_merged_and_reloads_with_the_same_logits(tmp_path):
    from nlhf.models.loading import load_causal_lm
    from nlhf.models.lora import LoraSettings

    eval_pairs = PAIRS[:3]
    cfg = config(tmp_path, loss="ipo", tau=0.5, lora=LoraSettings(r=4, lora_alpha=8.0), optim=dict(lr=0.05),
                 loop=dict(max_steps=3, micro_batch_size=4))  # fmt: skip
    result = run(cfg, eval_examples=eval_pairs)
    ev = result.summary["eval"]
    assert ev["kl_ref"] > 0  # the adapter moved the policy away from mu (= the base, adapter disabled)
    loaded, tok = load_causal_lm(result.policy_dir)
    ids = torch.tensor([tok("Hello there")["input_ids"]])
    with torch.no_grad():
        want = result.policy(input_ids=ids).logits
        got = loaded(input_ids=ids).logits
        base = tiny_causal_lm(tokenizer=tiny_tokenizer(), seed=0)(input_ids=ids).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert (got - base).abs().max() > 1e-4


def test_metrics_are_logged_and_eval_kl_is_zero_before_training_moves(tmp_path):
    """metrics.jsonl holds the documented keys; with lr ~ 0 the policy is mu and kl_ref = 0, accuracy 1/2."""
    import json

    cfg = config(tmp_path, loss="dpo", optim=dict(lr=1e-12), loop=dict(max_steps=2, micro_batch_size=4))
    result = run(cfg, eval_examples=PAIRS)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"][-1]
    for key in ("loss", "reward_margin", "log_ratio_margin", "accuracy", "chosen_reward", "rejected_reward",
                "chosen_logps", "rejected_logps", "grad_norm", "lr"):  # fmt: skip
        assert key in train, key
    ev = result.summary["eval"]
    assert ev["kl_ref"] == pytest.approx(0.0, abs=1e-6)
    assert ev["loss"] == pytest.approx(
        torch.nn.functional.softplus(torch.tensor(0.0)).item(), abs=1e-4
    )  # log 2
    assert abs(ev["reward_margin"]) < 1e-4


def test_prompt_sharing_with_one_token_responses_and_a_one_token_prompt():
    """Edge widths: every response a single token (only the last-position score) and a 1-token prompt."""
    from nlhf.data.collate import TokenizedPair

    tok = tiny_tokenizer()
    model = tiny_causal_lm(tokenizer=tok, seed=1)
    pairs = [TokenizedPair([5, 6, 7], [8], [9], 1.0), TokenizedPair([5], [10], [11], 1.0)]
    ref = ref_cache.RefLogps()
    ref.table["train"] = torch.zeros(2, 2)
    batch = dpo.make_collate(tok.pad_token_id, ref, share_prompt=True)(
        [dpo.OfflineItem("train", i, p) for i, p in enumerate(pairs)]
    )
    assert batch["completion_ids"].shape == (4, 1)
    with torch.no_grad():
        plain = pair_logps.pair_logps(model, batch, "sum", None)
        shared = pair_logps.pair_logps(model, batch, "sum", pair_logps.prompt_sharing(model))
    torch.testing.assert_close(shared, plain, rtol=1e-5, atol=1e-5)
