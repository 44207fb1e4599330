"""Tiny random models and a byte-level tokenizer, built from a config with no download.

For unit tests, CI and the tiny-model demo. The tokenizer copies what makes the real
default model (SmolLM2-135M-Instruct) awkward, so tests catch it: a ChatML chat template
and ``pad_token == eos_token`` (``<|im_end|>``), so masks must come from lengths, never
from ``ids != pad``.
"""

from __future__ import annotations

from typing import Any

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def tiny_tokenizer(padding_side: str = "right") -> Any:
    """A byte-level tokenizer (259 tokens: 256 bytes + 3 specials), pad == eos == ``<|im_end|>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()  # the 256 printable stand-ins for bytes
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        padding_side=padding_side,
    )
    tok.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    tok.chat_template = CHATML_TEMPLATE
    tok.model_max_length = 2048
    return tok


def tiny_causal_lm(
    vocab_size: int = 259,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 2048,
    seed: int = 0,
    tokenizer: Any | None = None,
) -> Any:
    """A randomly initialised Llama (about 0.1M parameters at the defaults), in fp32."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tokenizer
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=False,
        bos_token_id=getattr(tok, "bos_token_id", 1),
        eos_token_id=getattr(tok, "eos_token_id", 2),
        pad_token_id=getattr(tok, "pad_token_id", 2),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.float().eval()
