"""Scoring K responses per prompt with the prompt run once (nlhf.sampling.shared_prompt) equals the plain forward."""

import dataclasses

import pytest
import torch

from nlhf.data.collate import collate_prompts
from nlhf.data.prompt_batches import repeat_prompts
from nlhf.models.lora import LoraSettings
from nlhf.models.policy import build_policy
from nlhf.models.tiny import tiny_causal_lm, tiny_tokenizer
from nlhf.sampling import SamplingConfig, generate, response_logps
from nlhf.sampling.decode import RowGenerator
from nlhf.sampling.shared_prompt import grouped_response_logps, prompt_group_size

PROMPTS = [[1, 72, 101, 108], [1, 87, 104, 97, 116, 32, 105, 115], [1, 65]]  # lengths 4, 8, 2: left padding
EOS = PAD = 2


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """One torch thread (tests/conftest.py)."""


def grouped_rollout(model, K, max_new_tokens=10):
    """K samples of each prompt (prompt-major rows), each row on its own stream: responses of different lengths."""
    prompts = repeat_prompts(collate_prompts(PROMPTS, pad_token_id=PAD), K)
    gen = RowGenerator(list(range(len(PROMPTS) * K)))
    with torch.no_grad():
        rollout = generate(model, prompts.input_ids, prompts.attention_mask, SamplingConfig(max_new_tokens=max_new_tokens),
                           gen, eos_token_id=EOS, pad_token_id=PAD)  # fmt: skip
    # a random tiny model rarely ends early: cut rows to different lengths (as EOS would), padding after the cut
    N, R = rollout.response_ids.shape
    lengths = torch.tensor([R - 2 * (n % 4) for n in range(N)]).clamp(min=1)  # (N,)
    mask = (torch.arange(R).unsqueeze(0) < lengths.unsqueeze(1)).long()  # (N, R)
    return dataclasses.replace(rollout, response_ids=torch.where(mask.bool(), rollout.response_ids, PAD),
                               response_mask=mask, response_lengths=lengths,
                               policy_logps=rollout.policy_logps * mask)  # fmt: skip


def plain_logps(model, rollout, temperature=1.0):
    """The plain path: the same rollout with one distinct row inserted first would break the groups, so instead
    score each row on its own (a group of one), which takes the full-sequence forward."""
    rows = []
    for n in range(rollout.batch_size):
        one = dataclasses.replace(
            rollout, **{f.name: getattr(rollout, f.name)[n : n + 1] for f in dataclasses.fields(rollout)
                        if getattr(rollout, f.name) is not None}
        )  # fmt: skip
        rows.append(response_logps(model, one, temperature))
    return torch.cat(rows)


def test_prompt_group_size_detects_runs_of_identical_prompts():
    batch = collate_prompts(PROMPTS, pad_token_id=PAD)
    model = tiny_causal_lm(seed=0, tokenizer=tiny_tokenizer())
    r3 = grouped_rollout(model, 3, max_new_tokens=2)
    assert prompt_group_size(r3) == 3
    single = dataclasses.replace(r3, prompt_ids=batch.input_ids, prompt_mask=batch.attention_mask,
                                 response_ids=r3.response_ids[:3], response_mask=r3.response_mask[:3])  # fmt: skip
    assert prompt_group_size(single) == 1
    uneven = dataclasses.replace(r3, prompt_ids=torch.cat([r3.prompt_ids[:4], r3.prompt_ids[6:]]),
                                 prompt_mask=torch.cat([r3.prompt_mask[:4], r3.prompt_mask[6:]]))  # fmt: skip
    assert prompt_group_size(uneven) == 1  # runs of 3, 1 and 3 rows
    with pytest.raises(ValueError, match="groups of 2"):
        grouped_response_logps(model, r3, 2)


@pytest.mark.parametrize("K", [2, 4])
def test_shared_prompt_logps_and_gradients_equal_the_plain_forward(K):
    """LoRA policy on a tiny Llama: the grouped path (taken by response_logps itself) gives the plain forward's
    log-probs to 1e-5 and the same LoRA gradients to 1e-4 relative, at temperature 1 and 0.7."""
    torch.manual_seed(0)
    base = tiny_causal_lm(seed=0, tokenizer=tiny_tokenizer())
    policy, _ = build_policy(base, LoraSettings(r=4, target_modules=("q_proj", "v_proj", "up_proj")))
    with torch.no_grad():  # non-zero adapters, so the gradients reach both LoRA matrices
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.05)
    rollout = grouped_rollout(policy, K)
    assert prompt_group_size(rollout) == K
    assert len(set(rollout.response_lengths.tolist())) > 1  # rows of different lengths
    for temperature in (1.0, 0.7):
        shared = response_logps(policy, rollout, temperature)  # (N, R) grouped path
        plain = plain_logps(policy, rollout, temperature)
        torch.testing.assert_close(shared, plain, rtol=0, atol=1e-5)
        assert bool((shared[rollout.response_mask == 0] == 0).all())
    params = [p for p in policy.parameters() if p.requires_grad]
    weights = torch.linspace(0.5, 1.5, rollout.batch_size).unsqueeze(1)  # (N, 1) distinct weight per row
    g_shared = torch.autograd.grad((weights * response_logps(policy, rollout)).sum(), params)
    g_plain = torch.autograd.grad((weights * plain_logps(policy, rollout)).sum(), params)
    for a, b in zip(g_shared, g_plain):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # the sampler's recorded log pi (temperature 1) agrees too
    torch.testing.assert_close(
        response_logps(policy, rollout).detach(), rollout.policy_logps, rtol=0, atol=1e-5
    )
