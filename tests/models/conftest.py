"""Tiny backbones for the model tests: a random Llama with the byte tokenizer, a random BERT
with the real MiniLM tokenizer. Everything is built from a config (no download)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one torch thread (tests/conftest.py)."""


@pytest.fixture
def tiny_tok():
    from nlhf.models.tiny import tiny_tokenizer

    return tiny_tokenizer()


@pytest.fixture
def tiny_lm(tiny_tok):
    from nlhf.models.tiny import tiny_causal_lm

    return tiny_causal_lm(tokenizer=tiny_tok, seed=0)


def make_tiny_bert(seed: int = 0):
    """A 2-layer, 32-wide random BertModel and the all-MiniLM-L6-v2 tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from nlhf.models.loading import minilm_dir

    tok = AutoTokenizer.from_pretrained(str(minilm_dir()))
    config = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertModel(config).eval()
    return model, tok


@pytest.fixture
def tiny_bert():
    return make_tiny_bert()
