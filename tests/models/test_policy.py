"""Policy pi and explicit reference mu: the reference is the model as passed in, never the
adapted one (docs/PEERS.md: TRL's LoRA reference was long the adapted model itself)."""

from __future__ import annotations

import copy

import pytest
import torch

from nlhf.models import LoraSettings, Reference, build_policy, load_causal_lm, save_policy
from nlhf.models.tiny import tiny_causal_lm


def _batch(tok):
    enc = tok(["hello there, policy", "a second, longer example row"], padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def _one_step(policy, ids, mask, lr=1e-2):
    """One Adam step on the negative log-likelihood of the batch."""
    opt = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=lr)
    policy.train()
    logits = policy(input_ids=ids, attention_mask=mask).logits  # (B, T, V)
    logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)  # (B, T-1)
    loss = -(logp * mask[:, 1:]).sum() / mask[:, 1:].sum()
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_lora_reference_is_base_with_adapter_disabled(tiny_lm, tiny_tok):
    ids, mask = _batch(tiny_tok)
    base = copy.deepcopy(tiny_lm).eval()
    with torch.no_grad():
        base_logits = base(input_ids=ids, attention_mask=mask).logits
    policy, reference = build_policy(tiny_lm, LoraSettings(r=4, target_modules=("q_proj", "v_proj")))
    assert isinstance(reference, Reference) and reference.mode == "adapter_disabled"
    assert list(reference.parameters()) == []  # the policy's weights are not registered under mu
    _one_step(policy, ids, mask)

    ref_out = reference(input_ids=ids, attention_mask=mask).logits
    assert not ref_out.requires_grad
    torch.testing.assert_close(ref_out, base_logits, atol=0, rtol=0)
    assert policy.training  # the reference call restored the policy's mode...
    policy.eval()
    with torch.no_grad():
        pol_logits = policy(input_ids=ids, attention_mask=mask).logits  # ...and re-enabled the adapter
    assert (pol_logits - base_logits).abs().max() > 1e-4
    # greedy generation from mu also runs with the adapter off
    out_ref = reference.generate(input_ids=ids[:1, :5], max_new_tokens=4, do_sample=False)
    out_base = base.generate(input_ids=ids[:1, :5], max_new_tokens=4, do_sample=False)
    assert out_ref.tolist() == out_base.tolist()


def test_full_finetune_reference_is_a_frozen_copy(tiny_lm, tiny_tok):
    ids, mask = _batch(tiny_tok)
    with torch.no_grad():
        before = tiny_lm(input_ids=ids, attention_mask=mask).logits
    policy, reference = build_policy(tiny_lm)
    assert policy is tiny_lm and reference.mode == "frozen_copy" and reference.model is not policy
    assert all(not p.requires_grad for p in reference.parameters())
    assert all(p.requires_grad for p in policy.parameters())
    _one_step(policy, ids, mask)
    reference.train()  # mu never enters training mode
    assert not reference.model.training
    torch.testing.assert_close(reference(input_ids=ids, attention_mask=mask).logits, before, atol=0, rtol=0)
    with torch.no_grad():
        after = policy.eval()(input_ids=ids, attention_mask=mask).logits
    assert (after - before).abs().max() > 1e-4


def test_build_policy_refuses_a_second_adapter(tiny_lm):
    lora = LoraSettings(r=2, target_modules=("q_proj",))
    policy, _ = build_policy(tiny_lm, lora)
    with pytest.raises(ValueError, match="already has peft adapters"):
        build_policy(policy, lora)


def test_save_policy_merged_and_adapter(tmp_path, tiny_tok):
    ids, mask = _batch(tiny_tok)
    tiny_causal_lm(tokenizer=tiny_tok).save_pretrained(tmp_path / "base")
    tiny_tok.save_pretrained(tmp_path / "base")
    model, tok = load_causal_lm(tmp_path / "base")  # so the adapter can name its base
    policy, _ = build_policy(model, LoraSettings(r=4, target_modules=("q_proj", "v_proj")))
    _one_step(policy, ids, mask)
    policy.eval()
    with torch.no_grad():
        expected = policy(input_ids=ids, attention_mask=mask).logits

    save_policy(policy, tmp_path / "merged", merge=True, tokenizer=tok)
    merged, merged_tok = load_causal_lm(tmp_path / "merged")
    assert type(merged).__name__ == "LlamaForCausalLM" and merged_tok.pad_token == "<|im_end|>"
    torch.testing.assert_close(merged(input_ids=ids, attention_mask=mask).logits, expected, atol=1e-5, rtol=0)

    save_policy(policy, tmp_path / "adapter", merge=False)
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    adapted, _ = load_causal_lm(tmp_path / "adapter")
    torch.testing.assert_close(adapted(input_ids=ids, attention_mask=mask).logits, expected, atol=0, rtol=0)

    save_policy(policy, tmp_path / "merged", merge=True)  # an earlier save is replaced
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an earlier model save"):
        save_policy(policy, tmp_path / "other")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]  # no leftovers
