"""Hugging Face models as judges (issue 16): ``hf-reward:`` reward models and ``llm:`` pairwise LLM judges.

Tiny random models built in the test (no download): the mechanism is tested, not the quality.
"""

from __future__ import annotations

import pytest
import torch

from nlhf.judges import LLM_JUDGE_TEMPLATE, HFRewardJudge, Judge, LLMJudge, load_judge
from nlhf.models.files import ModelLoadError
from nlhf.models.tiny import tiny_causal_lm, tiny_tokenizer

PROMPTS = ["What is 2 + 2?", "Name a colour.", "Say hi.", "Count to three."]
FIRST = ["4", "Blue, the colour of the sky on a clear day.", "hi", "one two three"]
SECOND = ["It is five.", "red", "Hello there, friend!", "1 2 3"]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory):
    """A TRL RewardTrainer-layout directory: LlamaForSequenceClassification (num_labels=1) + a chat tokenizer."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tok = tiny_tokenizer()
    config = LlamaConfig(vocab_size=259, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, num_labels=1,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id)  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config)
    torch.nn.init.normal_(model.score.weight, std=1.0)  # rewards far enough apart to test with
    path = tmp_path_factory.mktemp("rm") / "reward"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def direct_rewards(path, prompts, responses) -> torch.Tensor:
    """r(x, y) with transformers alone, one unpadded row at a time."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    out = []
    for x, y in zip(prompts, responses):
        messages = [{"role": "user", "content": x}, {"role": "assistant", "content": y}]
        text = tok.apply_chat_template(messages, tokenize=False)
        enc = tok(text, add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            out.append(model(**enc).logits[0, 0].item())
    return torch.tensor(out)


def test_hf_reward_judge_matches_transformers_and_is_bradley_terry(reward_dir):
    judge = load_judge(f"hf-reward:{reward_dir}", batch_size=3)  # 8 rows in forwards of 3, 3 and 2
    assert isinstance(judge, HFRewardJudge) and isinstance(judge, Judge)
    assert judge.name == f"hf-reward:{reward_dir}"
    want_first = direct_rewards(reward_dir, PROMPTS, FIRST)
    want_second = direct_rewards(reward_dir, PROMPTS, SECOND)
    torch.testing.assert_close(judge.rewards(PROMPTS, FIRST), want_first, atol=1e-5, rtol=0)
    torch.testing.assert_close(judge.rewards(PROMPTS, SECOND), want_second, atol=1e-5, rtol=0)
    assert (want_first - want_second).abs().max() > 1e-3  # the rewards differ, so the next checks can fail
    p_ab = judge.prob(PROMPTS, FIRST, SECOND)
    torch.testing.assert_close(p_ab, torch.sigmoid(want_first - want_second), atol=1e-5, rtol=0)
    p_ba = judge.prob(PROMPTS, SECOND, FIRST)
    torch.testing.assert_close(p_ab + p_ba, torch.ones(4), atol=1e-6, rtol=0)


def test_hf_reward_judge_renders_the_chat_template_or_the_plain_layout(reward_dir):
    judge = load_judge(f"hf-reward:{reward_dir}", batch_size=4)
    assert judge.render("hi", "yo") == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n"
    judge.tokenizer.chat_template = None
    assert judge.render("hi", "yo") == "hi\n\nAssistant: yo"


def test_hf_reward_judge_refuses_a_multi_logit_model():
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig(vocab_size=259, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, num_labels=2, pad_token_id=2)  # fmt: skip
    with pytest.raises(ValueError, match="num_labels=2"):
        HFRewardJudge(LlamaForSequenceClassification(config), tiny_tokenizer())


@pytest.mark.parametrize("spec", ["hf-reward:/no/such/reward", "llm:/no/such/lm", "llm:", "hf-reward:"])
def test_a_judge_spec_that_cannot_load_is_one_line_naming_it(spec):
    with pytest.raises(ModelLoadError) as info:
        load_judge(spec, batch_size=2)
    message = str(info.value)
    assert repr(spec) in message and "\n" not in message


# ----------------------------------------------------------------------------- llm:


@pytest.fixture(scope="module")
def llm_judge():
    return load_judge("llm:tiny", batch_size=16)


def test_llm_judge_is_exactly_symmetric_and_half_on_ties(llm_judge):
    assert isinstance(llm_judge, LLMJudge) and llm_judge.name == "llm:tiny"
    p_ab = llm_judge.prob(PROMPTS, FIRST, SECOND)
    p_ba = llm_judge.prob(PROMPTS, SECOND, FIRST)
    torch.testing.assert_close(p_ab + p_ba, torch.ones(4), atol=1e-6, rtol=0)
    assert (p_ab - 0.5).abs().max() > 1e-4  # the random model is not indifferent, so symmetry is not trivial
    ties = llm_judge.prob(PROMPTS, FIRST, FIRST)
    torch.testing.assert_close(ties, torch.full((4,), 0.5), atol=1e-6, rtol=0)


def test_llm_judge_batching_invariance():
    """Batch 1 and batch 4 (left padding over prompts of different lengths) give the same P."""
    one = load_judge("llm:tiny", batch_size=1).prob(PROMPTS, FIRST, SECOND)
    four = load_judge("llm:tiny", batch_size=4).prob(PROMPTS, FIRST, SECOND)
    torch.testing.assert_close(one, four, atol=1e-5, rtol=0)


class KnownLogits(torch.nn.Module):
    """A wrapped causal LM whose last-position logits of 'A' and 'B' are set per judge prompt.

    ``p(A)`` for a prompt that shows ``first_shown`` as response A is sigmoid(logit_A - logit_B) with
    logit_A - logit_B = ``margins[first_shown]``.
    """

    def __init__(self, inner, tokenizer, margins):
        super().__init__()
        self.inner, self.tokenizer, self.margins = inner, tokenizer, margins
        self.config = inner.config

    def forward(self, input_ids, attention_mask, position_ids):
        logits = self.inner(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
        ).logits
        logits = logits.clone()
        a, b = (self.tokenizer.convert_tokens_to_ids(t) for t in ("A", "B"))
        for i, row in enumerate(self.tokenizer.batch_decode(input_ids, skip_special_tokens=True)):
            shown_first = row.split("Response A:\n", 1)[1].split("\n", 1)[0]
            logits[i, -1, a] = self.margins[shown_first]
            logits[i, -1, b] = 0.0
        return type("Out", (), {"logits": logits})()


def test_llm_judge_by_hand_on_known_label_logits():
    """margin(first shown = 'good') = 2, margin(first shown = 'bad') = 1 (a bias towards A):
    p_AB(A) = sigmoid(2), p_BA(A) = sigmoid(1), P(good > bad) = (sigmoid(2) + 1 - sigmoid(1)) / 2."""
    tok = tiny_tokenizer()
    model = KnownLogits(tiny_causal_lm(tokenizer=tok), tok, {"good": 2.0, "bad": 1.0})
    judge = LLMJudge(model, tok, batch_size=3)
    p = judge.prob(["q", "q"], ["good", "bad"], ["bad", "good"])
    s = torch.sigmoid
    want = 0.5 * (s(torch.tensor(2.0, dtype=torch.float64)) + 1 - s(torch.tensor(1.0, dtype=torch.float64)))
    torch.testing.assert_close(p, torch.tensor([want, 1 - want], dtype=torch.float32), atol=1e-7, rtol=0)
    assert p[0].item() == pytest.approx(0.574869, abs=1e-6)  # 0.5 * (0.880797 + 1 - 0.731059)


def test_llm_judge_template_and_labels_are_overridable():
    tok = tiny_tokenizer()
    judge = LLMJudge(tiny_causal_lm(tokenizer=tok), tok, template="{prompt}|{a}|{b} {label_a}/{label_b}?",
                     labels=("1", "2"))  # fmt: skip
    assert judge.label_ids == tuple(tok.convert_tokens_to_ids(t) for t in ("1", "2"))
    assert "x|y|z 1/2?" in judge.render("x", "y", "z")
    assert "{prompt}" in LLM_JUDGE_TEMPLATE and "{a}" in LLM_JUDGE_TEMPLATE and "{b}" in LLM_JUDGE_TEMPLATE
    with pytest.raises(ValueError, match=r"\{b\}"):
        LLMJudge(tiny_causal_lm(tokenizer=tok), tok, template="{prompt} {a}")
    with pytest.raises(ValueError, match="same token"):
        LLMJudge(tiny_causal_lm(tokenizer=tok), tok, labels=("Yes", "Yo"))


def test_llm_judge_spec_options_set_template_and_labels(tmp_path):
    template = tmp_path / "judge.txt"
    template.write_text("Q: {prompt}\n1) {a}\n2) {b}\nBetter, {label_a} or {label_b}?")
    judge = load_judge(f"llm:tiny:3,template={template},labels=1/2", batch_size=2)
    assert judge.template == template.read_text() and judge.labels == ("1", "2")
    assert judge.render("x", "y", "z").endswith(
        "Q: x\n1) y\n2) z\nBetter, 1 or 2?<|im_end|>\n<|im_start|>assistant\n"
    )
    p = judge.prob(PROMPTS[:2], FIRST[:2], SECOND[:2])
    torch.testing.assert_close(
        p + judge.prob(PROMPTS[:2], SECOND[:2], FIRST[:2]), torch.ones(2), atol=1e-6, rtol=0
    )
    for bad in (f"llm:tiny,template={tmp_path / 'missing.txt'}", "llm:tiny,labels=A/B/C"):
        with pytest.raises(ModelLoadError, match="missing.txt|two labels") as info:
            load_judge(bad, batch_size=2)
        assert repr(bad) in str(info.value)
