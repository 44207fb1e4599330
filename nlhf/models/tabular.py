"""A "language model" whose responses are single tokens: a learnable logits table.

The policy of the PsiPO bandits and of the lab's matrix games (THEORY.md Sec. 3-5) is
pi = softmax(theta) over n actions, with no context. :class:`TabularLM` is that policy in
the causal-LM interface, so the REAL trainers (tokenisation, collation, log-probs,
losses, loop) run on it unchanged and can be checked against the exact answers of
:mod:`nlhf.lab`.

Vocabulary (``V = n_actions + 1 + n_prompts`` tokens)::

    0 .. n_actions - 1          the actions (a response is one of them)
    n_actions                   EOS (also the pad token, as in SmolLM2: masks from lengths)
    n_actions + 1 + k           prompt k, k = 0 .. n_prompts - 1 (a prompt is one token)

A sequence is ``prompt, action, EOS``. The next-token logits at position t depend only on
the token at t (context-free apart from the one prompt token):

* after prompt k: ``theta[k]`` on the actions, ``NEG`` on EOS and on the prompt tokens;
* after an action (or EOS): 0 on EOS and ``NEG`` elsewhere, so EOS follows with
  probability 1 and contributes log 1 = 0 to a summed sequence log-probability.

Hence log pi(action, EOS | prompt k) = log softmax(theta[k])[action] exactly, and
softmax(theta[k]) is the policy of the lab. ``NEG = -1e4`` rather than ``-inf`` keeps
every KL term finite (0 * finite = 0); exp(-1e4) is 0 in every float dtype. With the
``"mean"`` reduction the EOS token counts as a second completion token (mean = sum / 2).

Because the logits at t depend on token t alone, a cached decode loop that feeds only the
newest token gets the same distribution as a full forward: cache arguments are accepted
and ignored (no cache is returned).

    from nlhf.models.tabular import tabular_lm, tabular_tokenizer, action_probs
    tok = tabular_tokenizer(("a", "b", "c"))          # prompt "x", responses "a" | "b" | "c"
    model = tabular_lm(3)                              # theta = 0: the uniform policy
    action_probs(model)                                # tensor([1/3, 1/3, 1/3])

Importing this module imports torch and transformers (it defines a ``PreTrainedModel``);
it is not imported by the CLI. It registers the config and model with transformers'
``AutoConfig`` / ``AutoModelForCausalLM`` (model type ``nlhf_tabular``), so a saved table
loads with ``AutoModelForCausalLM.from_pretrained`` once this module is imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

NEG = -1e4  # logit of the tokens that cannot come next (probability exp(-1e4) = 0)
EOS_TOKEN = "<eos>"
MODEL_TYPE = "nlhf_tabular"


class TabularConfig(PretrainedConfig):
    """``n_actions`` single-token responses, ``n_prompts`` single-token prompts."""

    model_type = MODEL_TYPE

    def __init__(self, n_actions: int = 3, n_prompts: int = 1, **kwargs: Any) -> None:
        if n_actions < 2:
            raise ValueError(f"TabularConfig: n_actions must be >= 2, got {n_actions}")
        if n_prompts < 1:
            raise ValueError(f"TabularConfig: n_prompts must be >= 1, got {n_prompts}")
        self.n_actions = int(n_actions)
        self.n_prompts = int(n_prompts)
        self.vocab_size = self.n_actions + 1 + self.n_prompts
        kwargs.setdefault("eos_token_id", self.n_actions)
        kwargs.setdefault("pad_token_id", self.n_actions)
        kwargs.setdefault("bos_token_id", None)
        kwargs.setdefault("tie_word_embeddings", False)
        kwargs.setdefault("num_hidden_layers", 1)  # what DynamicCache(config=...) reads; no real layers
        super().__init__(**kwargs)

    @property
    def eos_id(self) -> int:
        return self.n_actions

    def prompt_id(self, k: int) -> int:
        """Token id of prompt ``k``."""
        if not 0 <= k < self.n_prompts:
            raise ValueError(f"prompt index {k} outside 0..{self.n_prompts - 1}")
        return self.n_actions + 1 + k


class TabularLM(PreTrainedModel):
    """pi(y | prompt k) = softmax(theta[k])[y]: a logits table in the causal-LM interface.

    ``theta`` (n_prompts, n_actions) is the only parameter (zeros: the uniform policy).
    ``forward(input_ids, attention_mask=None, **kw).logits`` is (B, T, V) (module docstring).
    """

    config_class = TabularConfig
    base_model_prefix = "tabular"
    main_input_name = "input_ids"
    _no_split_modules: list[str] = []

    def __init__(self, config: TabularConfig) -> None:
        super().__init__(config)
        self.theta = nn.Parameter(torch.zeros(config.n_prompts, config.n_actions))  # (P, n)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, TabularLM):
            with torch.no_grad():
                module.theta.zero_()

    def get_input_embeddings(self) -> None:  # no embeddings: nothing to resize or tie
        return None

    def get_output_embeddings(self) -> None:
        return None

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Next-token logits (B, T, V) at every position of ``input_ids`` (B, T)."""
        cfg = self.config
        n, P = cfg.n_actions, cfg.n_prompts
        if input_ids.dim() != 2:
            raise ValueError(f"TabularLM: input_ids must be (B, T), got {tuple(input_ids.shape)}")
        if bool(((input_ids < 0) | (input_ids >= cfg.vocab_size)).any()):
            raise ValueError(f"TabularLM: token ids must lie in 0..{cfg.vocab_size - 1}")
        B, T = input_ids.shape
        is_prompt = input_ids > n  # (B, T) the token at t is a prompt token
        k = (input_ids - (n + 1)).clamp(0, P - 1)  # (B, T) its prompt index (0 elsewhere)
        theta = self.theta  # (P, n)
        neg = theta.new_full((), NEG)
        actions = torch.where(is_prompt.unsqueeze(-1), theta[k], neg)  # (B, T, n)
        eos = torch.where(is_prompt, neg, theta.new_zeros(())).unsqueeze(-1)  # (B, T, 1)
        prompts = neg.expand(B, T, P)  # (B, T, P)
        logits = torch.cat([actions, eos, prompts], dim=-1)  # (B, T, V)
        return CausalLMOutputWithPast(logits=logits)

    def action_log_probs(self, prompt: int = 0) -> torch.Tensor:
        """log pi(. | prompt) over the actions, (n,), differentiable."""
        return torch.log_softmax(self.theta[prompt], dim=-1)

    @classmethod
    def from_logits(cls, logits: Any) -> TabularLM:
        """A table with ``theta = logits``: (n,) for one prompt, or (n_prompts, n)."""
        table = torch.as_tensor(logits, dtype=torch.float32)
        if table.dim() == 1:
            table = table.unsqueeze(0)
        if table.dim() != 2:
            raise ValueError(f"from_logits: expected (n,) or (n_prompts, n) logits, got {tuple(table.shape)}")
        model = cls(TabularConfig(n_actions=table.shape[1], n_prompts=table.shape[0]))
        with torch.no_grad():
            model.theta.copy_(table)
        return model


def tabular_lm(n_actions: int, n_prompts: int = 1, logits: Any = None) -> TabularLM:
    """A :class:`TabularLM`; ``logits`` (n,) or (n_prompts, n) sets theta (default 0: uniform)."""
    if logits is not None:
        model = TabularLM.from_logits(logits)
        if model.config.n_actions != n_actions or model.config.n_prompts != n_prompts:
            raise ValueError(
                f"tabular_lm: logits of shape {tuple(model.theta.shape)} do not match "
                f"n_prompts={n_prompts}, n_actions={n_actions}"
            )
        return model
    return TabularLM(TabularConfig(n_actions=n_actions, n_prompts=n_prompts))


def tabular_tokenizer(actions: Sequence[str], prompts: Sequence[str] = ("x",)) -> Any:
    """A word-level tokenizer for :class:`TabularLM`: one token per action / prompt name.

    Ids follow the model's vocabulary (module docstring): ``actions[i] -> i``, EOS
    (``"<eos>"``, also the pad token) ``-> len(actions)``, ``prompts[k] -> len(actions) + 1 + k``.
    No chat template, no BOS: with :mod:`nlhf.data.collate` a pair (prompt ``"x"``,
    responses ``"a"``, ``"b"``) becomes the rows ``[x, a, EOS]`` and ``[x, b, EOS]``. A text
    that is not a single known name is an error at tokenisation.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    names = list(actions) + [EOS_TOKEN] + list(prompts)
    if len(set(names)) != len(names):
        raise ValueError(f"tabular_tokenizer: action and prompt names must be distinct, got {names}")
    bad = [s for s in names if not s or any(c.isspace() for c in s)]
    if bad:
        raise ValueError(f"tabular_tokenizer: names must be non-empty and without spaces, got {bad}")
    vocab = {name: i for i, name in enumerate(names)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=None))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN)
    tok.model_max_length = 8
    return tok


def action_probs(model: Any, prompt: int = 0) -> torch.Tensor:
    """pi(. | prompt) over the actions of a :class:`TabularLM` (or a wrapper of one), detached."""
    inner = model
    while not isinstance(inner, TabularLM):
        nxt = getattr(inner, "module", None) or getattr(inner, "model", None)
        if nxt is None or nxt is inner:
            raise TypeError(f"action_probs: {type(model).__name__} does not wrap a TabularLM")
        inner = nxt
    with torch.no_grad():
        return torch.softmax(inner.theta[prompt].double(), dim=-1)


AutoConfig.register(MODEL_TYPE, TabularConfig, exist_ok=True)
AutoModelForCausalLM.register(TabularConfig, TabularLM, exist_ok=True)

__all__ = [
    "NEG",
    "EOS_TOKEN",
    "TabularConfig",
    "TabularLM",
    "tabular_lm",
    "tabular_tokenizer",
    "action_probs",
]
