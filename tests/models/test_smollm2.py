"""The embedded SmolLM2-135M-Instruct GGUF, loaded through the converted safetensors cache.

Uses the default cache directory on purpose: the first run anywhere converts the GGUF file
(~30 s on 2 cores) and every later run reads the cache (~1 s). A temporary cache would
force the slow conversion on every run.
"""

from __future__ import annotations

import json

import pytest
import torch

from nlhf.models import load_causal_lm
from nlhf.models.loading import CACHE_MARKER, default_cache_dir, smollm2_gguf_path


@pytest.mark.slow
def test_smollm2_from_cache_is_plain_trainable_and_sensible():
    torch.set_num_threads(1)
    model, tok = load_causal_lm("smollm2")
    cache = default_cache_dir() / "smollm2"
    marker = json.loads((cache / CACHE_MARKER).read_text())
    assert marker["source"] == str(smollm2_gguf_path().resolve())
    assert (cache / "model.safetensors").is_file()

    # the GGUF quantizer flag is gone (it blocks training and saving, docs/PEERS.md)
    assert getattr(model.config, "quantization_config", None) is None
    assert getattr(model, "hf_quantizer", None) is None
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 30
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert all(p.requires_grad and p.dtype == torch.float32 for p in model.parameters())

    # pad == eos == <|im_end|>: masks must come from lengths
    assert tok.pad_token == tok.eos_token == "<|im_end|>" and tok.pad_token_id == tok.eos_token_id == 2

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    enc = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    new = out[0, enc["input_ids"].shape[1] :]
    text = tok.decode(new, skip_special_tokens=True)
    assert "Paris" in text, text
    assert new[-1].item() == tok.eos_token_id  # it ends its answer with <|im_end|>

    # the same model as a preference-model backbone: LM head dropped, last-token pooling,
    # symmetric by construction on the real weights too
    from nlhf.models import PairwisePreferenceModel

    pm = PairwisePreferenceModel(model, tok)
    assert pm.backbone_kind == "causal" and pm.pooling == "last" and pm.hidden_size == 576
    assert type(pm.backbone).__name__ == "LlamaModel"
    prompts, a, b = ["Capital of France?"] * 2, ["Paris.", "Lyon."], ["Lyon.", "Lyon."]
    p_ab, p_ba = pm.prob(prompts, a, b), pm.prob(prompts, b, a)
    torch.testing.assert_close(p_ab + p_ba, torch.ones(2), atol=1e-6, rtol=0)
    assert abs(float(p_ab[1]) - 0.5) < 1e-6
