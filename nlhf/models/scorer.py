"""A Hugging Face backbone, a pooling rule and a linear head: one scalar per sequence.

The shared base of :class:`~nlhf.models.preference_model.PairwisePreferenceModel`
(the scalar is f(x, first, second), THEORY.md Sec. 1) and
:class:`~nlhf.models.reward_model.RewardModel` (the scalar is r(x, y)). It owns what the two
have in common: the backbone (an encoder such as MiniLM, or the base transformer of a
causal LM with its LM head dropped), pooling, optional LoRA, and saving/loading.

Pooling (``pooling=``):

* ``"last"``  (default for causal LMs): the hidden state of each row's last real token,
  found from the attention mask (which the encoders build from lengths), never from the
  pad id: SmolLM2 has pad == eos, and the last real token IS an eos.
* ``"mean"``  (default for encoders; MiniLM was trained with mean pooling): the masked mean.
* ``"cls"``   the first position (BERT's ``[CLS]``); rows must be right-padded.
* ``"segments"`` (default of the preference model on encoders): the masked mean of each
  response slot's tokens, concatenated: ``[mean(slot 1); mean(slot 2)]`` (N, 2H) for the
  triple (x, first, second), read from the ``segment_ids`` of
  :mod:`nlhf.data.judge_inputs` (1 for the tokens of ``first``, 2 for ``second``); the
  head is then ``Linear(2H, 1)``. A reward model has one slot (the response tokens).
  Antisymmetry of the preference logit does not depend on the head: f(x, a, b) -
  f(x, b, a) changes sign when a and b swap, for any f.

Input layout (``input_layout``, recorded in ``nlhf_head.json``): ``"marked"`` for the
preference model (and for reward models saved in format 1) puts text markers between the
segments of a causal-LM input; a new reward model uses ``"plain"``, ``x y [EOS]``, like
TRL's RewardTrainer (:func:`nlhf.data.judge_inputs.encode_single`). Encoder inputs are
``[CLS] x [SEP] y [SEP]`` either way.

Shared prompt (causal backbones, ``share_prompt=True``, the default; "last" and
"segments" pooling): the preference model's two orders (x, a, b) and (x, b, a) begin with
the same tokens (prompt and first marker: the tokens before the first non-zero segment
id), so :meth:`SequenceScorer.score_shared_prefix` runs that prefix once per pair and
continues both orders from its KV cache: the same scores and gradients as reading each
row whole (tested), with the prefix computed once instead of twice.

Directory layout written by :meth:`SequenceScorer.save_pretrained` (``save_pretrained``-
compatible: ``AutoModel.from_pretrained(dir)`` loads the backbone alone)::

    config.json, model.safetensors     the backbone (HF save_pretrained, safetensors)
    tokenizer.json, ...                the tokenizer
    head.safetensors                   the linear head: "weight" (1, H) ((1, 2H) for the
                                       preference model's "segments" pooling), "bias" (1,)
    adapter/                           LoRA adapter (peft), only when saved unmerged
    nlhf_head.json                     what the head is (kind, pooling, input layout, backbone
                                       kind, LoRA); written last, so its presence marks a
                                       complete save

``format_version`` 2 (this version) added ``"segments"`` pooling (head (1, 2H)) and the
reward model's ``"plain"`` causal layout (``input_layout``); format 1 directories (no
``input_layout``: ``"marked"``) load unchanged and score exactly as before.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from nlhf.data.schema import Prompt
from nlhf.models.backbone import (  # noqa: F401 - shared_prefix_lengths re-exported (tests, benchmarks)
    backbone_kind,
    cache_argument,
    output_cache,
    shared_prefix_lengths,
    strip_lm_head,
)
from nlhf.models.lora import LoraSettings, apply_lora, base_state_dict, is_peft_model
from nlhf.models.pooling import POOLINGS, pool_hidden

HEAD_CONFIG = "nlhf_head.json"
HEAD_WEIGHTS = "head.safetensors"
ADAPTER_DIR = "adapter"
FORMAT_VERSION = 2
INPUT_LAYOUTS = ("marked", "plain")


def check_batch_sizes(**columns: Sequence[Any]) -> None:
    """A ValueError ``batch sizes differ: prompts 3, first 3, second 2`` unless all ``columns`` are as long."""
    if len({len(v) for v in columns.values()}) > 1:
        raise ValueError("batch sizes differ: " + ", ".join(f"{k} {len(v)}" for k, v in columns.items()))


def pad_and_stack(
    ids_a: Tensor, mask_a: Tensor, ids_b: Tensor, mask_b: Tensor, pad_id: int = 0
) -> tuple[Tensor, Tensor]:
    """Stack two (Na, Ta) and (Nb, Tb) batches into one (Na + Nb, max T), right-padding with mask 0."""
    width = max(ids_a.shape[1], ids_b.shape[1])

    def widen(ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        extra = width - ids.shape[1]
        if extra == 0:
            return ids, mask
        return (
            torch.nn.functional.pad(ids, (0, extra), value=pad_id),
            torch.nn.functional.pad(mask, (0, extra), value=0),
        )

    ia, ma = widen(ids_a, mask_a)
    ib, mb = widen(ids_b, mask_b)
    return torch.cat([ia, ib], 0), torch.cat([ma, mb], 0)


class SequenceScorer(nn.Module):
    """backbone -> pooled hidden state (N, H) -> linear head -> one float32 scalar per row (N,)."""

    kind: ClassVar[str] = ""
    num_segments: ClassVar[int] = 1  # response slots of one input row ("segments" pooling)
    default_input_layout: ClassVar[str] = "marked"
    _kinds: ClassVar[dict[str, type[SequenceScorer]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            SequenceScorer._kinds[cls.kind] = cls

    def __init__(
        self,
        backbone: Any,
        tokenizer: Any | None = None,
        *,
        pooling: str = "auto",
        kind_of_backbone: str | None = None,
        max_length: int | None = None,
        lora: LoraSettings | None = None,
        input_layout: str | None = None,
    ) -> None:
        super().__init__()
        self.backbone_kind = kind_of_backbone or backbone_kind(backbone)
        if self.backbone_kind not in ("causal", "encoder"):
            raise ValueError(f"backbone kind must be 'causal' or 'encoder', got {self.backbone_kind!r}")
        backbone = strip_lm_head(backbone)
        if pooling == "auto":
            pooling = self.auto_pooling(self.backbone_kind)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be 'auto' or one of {list(POOLINGS)}, got {pooling!r}")
        self.pooling = pooling
        self.input_layout = input_layout or self.default_input_layout
        if self.input_layout not in INPUT_LAYOUTS:
            raise ValueError(f"input_layout must be one of {list(INPUT_LAYOUTS)}, got {self.input_layout!r}")
        self.lora = lora
        if lora is not None and not is_peft_model(backbone):
            backbone = apply_lora(backbone, lora)
        self.backbone = backbone
        config = self.backbone_config
        hidden = getattr(config, "hidden_size", None) or getattr(config, "d_model", None) or config.n_embd
        self.hidden_size = int(hidden)
        param = next(backbone.parameters())
        width = self.hidden_size * (self.num_segments if pooling == "segments" else 1)
        self.head = nn.Linear(width, 1, device=param.device, dtype=torch.float32)  # (1, H) or (1, S * H)
        self.tokenizer = tokenizer
        self.max_length = int(max_length) if max_length is not None else self._default_max_length()

    @classmethod
    def auto_pooling(cls, kind_of_backbone: str) -> str:
        """What ``pooling="auto"`` means: ``"last"`` for causal backbones, ``"mean"`` for encoders."""
        return "last" if kind_of_backbone == "causal" else "mean"

    @classmethod
    def init_kwargs(cls, meta: dict[str, Any]) -> dict[str, Any]:
        """Constructor arguments of this kind read from ``nlhf_head.json`` (``meta``) by :meth:`from_pretrained`
        beyond the common ones; a ``ValueError`` for a bad value."""
        return {}

    # ------------------------------------------------------------------ properties

    @property
    def backbone_config(self) -> Any:
        return self.backbone.get_base_model().config if is_peft_model(self.backbone) else self.backbone.config

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def _default_max_length(self) -> int:
        limits = [getattr(self.backbone_config, "max_position_embeddings", None) or 2048, 2048]
        tok_max = getattr(self.tokenizer, "model_max_length", None)
        if tok_max is not None and tok_max < 1_000_000:
            limits.append(int(tok_max))
        return int(min(limits))

    # ------------------------------------------------------------------ compute

    def score_shared_prefix(
        self, input_ids: Tensor, attention_mask: Tensor, segment_ids: Tensor, prefix: Tensor
    ) -> Tensor:
        """``score`` of 2B rows (x, a, b) then (x, b, a) (2B, T), each pair's common prefix run once.

        Causal backbones only. ``prefix`` (B,) from :func:`shared_prefix_lengths`. Two forwards:

        1. the B prefixes, LEFT-padded to P = max prefix (every prefix ends at column P - 1),
           ``use_cache=True``;
        2. the 2B continuations (row 2i: pair i in order (a, b), row 2i + 1: (b, a)),
           right-padded to C, attending to the prefix cache repeated twice
           (``batch_repeat_interleave(2)``) under the mask ``[prefix mask | continuation
           mask]`` with position ids ``prefix_i + j``.

        Pooling ("last" or "segments") reads only continuation positions: the last real
        token (the EOS) and every response token lie there. Same scores (and gradients,
        which flow through the cache into the prefix forward) as :meth:`score`.
        """
        cache_arg = cache_argument(self.backbone)
        if cache_arg is None:
            raise ValueError(f"{type(self.backbone).__name__} takes no KV cache; use score()")
        dev = input_ids.device
        R, T = input_ids.shape  # (2B, T)
        B = R // 2
        lengths = attention_mask.long().sum(-1)  # (2B,)
        P = int(prefix.max())
        start = P - prefix  # (B,) first real column of each left-padded prefix
        cols_p = torch.arange(P, device=dev).unsqueeze(0)  # (1, P)
        head_mask = (cols_p >= start.unsqueeze(1)).long()  # (B, P)
        # gather the prefixes into their left-padded places: column c <- token c - start
        src = (cols_p - start.unsqueeze(1)).clamp(min=0)  # (B, P)
        head_ids = torch.where(head_mask.bool(), input_ids[:B].gather(1, src), input_ids[:B, :1])  # (B, P)
        head_pos = src  # (B, P) positions 0 .. prefix - 1 (pads clamped to 0, masked)
        out = self.backbone(
            input_ids=head_ids, attention_mask=head_mask, position_ids=head_pos, use_cache=True
        )
        cache = output_cache(out)
        if cache is None or not hasattr(cache, "batch_repeat_interleave"):
            raise RuntimeError(f"{type(self.backbone).__name__} returned no repeatable KV cache")
        cache.batch_repeat_interleave(2)  # rows 2i, 2i + 1 <- prefix i

        order = torch.stack(
            [torch.arange(B, device=dev), torch.arange(B, R, device=dev)], 1
        ).flatten()  # (2B,)
        pre = prefix.repeat_interleave(2)  # (2B,) prefix length of each interleaved row
        cont_len = lengths[order] - pre  # (2B,) >= 1
        C = int(cont_len.max())
        cols_c = torch.arange(C, device=dev).unsqueeze(0)  # (1, C)
        cont_mask = (cols_c < cont_len.unsqueeze(1)).long()  # (2B, C)
        take = (pre.unsqueeze(1) + cols_c).clamp(max=T - 1)  # (2B, C) source columns
        cont_ids = torch.where(cont_mask.bool(), input_ids[order].gather(1, take), input_ids[order][:, :1])
        cont_seg = torch.where(cont_mask.bool(), segment_ids[order].gather(1, take), 0)  # (2B, C)
        hidden = self.backbone(
            input_ids=cont_ids,
            attention_mask=torch.cat([head_mask.repeat_interleave(2, dim=0), cont_mask], 1),  # (2B, P + C)
            position_ids=pre.unsqueeze(1) + cols_c,  # (2B, C)
            use_cache=True,
            **{cache_arg: cache},
        ).last_hidden_state  # (2B, C, H)
        pooled = pool_hidden(hidden, cont_mask, self.pooling, cont_seg, self.num_segments)  # (2B, H | S*H)
        scores = self.head(pooled.to(self.head.weight.dtype)).squeeze(-1).float()  # (2B,) interleaved
        return torch.cat([scores[0::2], scores[1::2]])  # (2B,) (a, b) rows, then (b, a) rows

    def score(self, input_ids: Tensor, attention_mask: Tensor, segment_ids: Tensor | None = None) -> Tensor:
        """One scalar per row: ``head(pool(backbone(input_ids)))`` (N,) in float32.

        ``segment_ids`` (N, T) is needed by ``"segments"`` pooling only (ignored otherwise).
        """
        if input_ids.ndim != 2 or input_ids.shape != attention_mask.shape:
            raise ValueError(
                f"input_ids and attention_mask must both be (N, T); got {tuple(input_ids.shape)} "
                f"and {tuple(attention_mask.shape)}"
            )
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.backbone_kind == "causal":
            # positions from the mask, so a left-padded row is scored like an unpadded one
            kwargs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (N, T)
            kwargs["use_cache"] = False
        hidden = self.backbone(**kwargs).last_hidden_state  # (N, T, H)
        pooled = pool_hidden(
            hidden, attention_mask, self.pooling, segment_ids, self.num_segments
        )  # (N, H | S*H)
        return self.head(pooled.to(self.head.weight.dtype)).squeeze(-1).float()  # (N,)

    def _scored_in_batches(self, n: int, batch_size: int, score_rows: Callable[[int, int], Tensor]) -> Tensor:
        """``score_rows(lo, hi)`` (b,) for the rows [lo, hi) of each batch of ``n``, in eval mode, concatenated on CPU (n,).

        The training flag is restored after (also on an error); ``n == 0`` gives an empty tensor.
        Call it under ``torch.no_grad()``.
        """
        was_training = self.training
        self.eval()
        try:
            out = [score_rows(lo, lo + batch_size).cpu() for lo in range(0, n, batch_size)]
        finally:
            self.train(was_training)
        return torch.cat(out) if out else torch.zeros(0)

    def _require_tokenizer(self) -> Any:
        if self.tokenizer is None:
            raise ValueError(f"{type(self).__name__} has no tokenizer; pass tokenizer= to use text inputs")
        return self.tokenizer

    def single_rows(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[Any]:
        """One ``EncodedInput`` row per (x, y), before padding: laid out by ``self.input_layout`` (``x y [EOS]``
        for a new model on a causal LM) and truncated to ``max_length`` (:func:`nlhf.data.judge_inputs.encode_singles`).
        The row encoder of the kinds that score each response on its own (reward, general preference)."""
        from nlhf.data.judge_inputs import encode_singles

        check_batch_sizes(prompts=prompts, responses=responses)
        return encode_singles(
            self._require_tokenizer(),
            list(prompts),
            list(responses),
            self.max_length,
            layout=self.input_layout,
        )

    def pair_rows(self, prompts: Sequence[Prompt], first: Sequence[str], second: Sequence[str]) -> list[Any]:
        """The 2B single rows of a pair batch before padding: (x, first) rows, then (x, second) rows."""
        check_batch_sizes(prompts=prompts, first=first, second=second)
        p = list(prompts)
        return self.single_rows(p + p, list(first) + list(second))

    def collate_rows(self, rows: list[Any]) -> dict[str, Any]:
        """Right-pad encoded rows (``nlhf.data.judge_inputs.EncodedInput``); masks from lengths.

        Token type ids are NOT passed to the backbone (all zero), in training and judging
        alike: all-MiniLM-L6-v2 was trained on single segments of type 0, and one input
        convention for every path keeps training and judging identical.
        """
        from nlhf.data.judge_inputs import collate_encoded

        tok = self._require_tokenizer()
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        batch = collate_encoded(rows, int(pad))
        return {
            "input_ids": batch.input_ids,  # (N, T)
            "attention_mask": batch.attention_mask,  # (N, T), from lengths
            "segment_ids": batch.segment_ids,  # (N, T): 0 prompt/special/marker, k for response k
            "truncated": sum(int(r.truncated) for r in rows),  # rows cut to max_length
        }

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_backbone(
        cls,
        name_or_path: str,
        *,
        pooling: str = "auto",
        lora: LoraSettings | None = None,
        dtype: Any = "float32",
        device: Any = None,
        gguf_file: str | None = None,
        cache_dir: str | None = None,
        max_length: int | None = None,
        **kwargs: Any,
    ) -> SequenceScorer:
        """A fresh head on a pretrained backbone: ``"minilm"``, ``"smollm2"``, a path or a hub name (``kwargs``: the
        kind's own constructor arguments, e.g. a general preference model's ``rank``)."""
        from nlhf.models.loading import ModelLoadError, load_backbone

        if (Path(str(name_or_path)).expanduser() / HEAD_CONFIG).is_file():
            raise ModelLoadError(
                f"{name_or_path} holds a saved {cls.__name__ or 'model'} ({HEAD_CONFIG}); "
                f"use {cls.__name__}.from_pretrained({str(name_or_path)!r})"
            )
        backbone, tokenizer = load_backbone(
            name_or_path, dtype=dtype, device=device, gguf_file=gguf_file, cache_dir=cache_dir
        )
        model = cls(backbone, tokenizer, pooling=pooling, max_length=max_length, lora=lora, **kwargs)
        return model

    # ------------------------------------------------------------------ save / load

    def head_config(self, merged: bool) -> dict[str, Any]:
        cfg = self.backbone_config
        return {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "pooling": self.pooling,
            "input_layout": self.input_layout,
            "backbone_kind": self.backbone_kind,
            "backbone_model_type": getattr(cfg, "model_type", None),
            "hidden_size": self.hidden_size,
            "max_length": self.max_length,
            "lora": None
            if self.lora is None or not is_peft_model(self.backbone)
            else {**self.lora.to_dict(), "merged": merged},
        }

    def save_pretrained(
        self, path: str | Path, *, merge_lora: bool = False, state_dict: dict | None = None
    ) -> Path:
        """Write backbone (safetensors), tokenizer, head and ``nlhf_head.json`` into ``path``.

        With LoRA: ``merge_lora=True`` folds the adapter into the backbone weights (a plain
        checkpoint, loaded without peft); ``False`` keeps base weights and ``adapter/``
        separately (loaded back as a trainable LoRA model). ``state_dict``: this module's
        full state (``backbone.*`` and ``head.*`` keys) gathered elsewhere, e.g. by
        ``accelerator.get_state_dict`` under FSDP, where this module only holds shards; it
        replaces the module's own weights in the files (not supported with LoRA).
        """
        import copy

        from safetensors.torch import save_file

        path = Path(path)
        if state_dict is not None:
            if is_peft_model(self.backbone):
                raise ValueError("save_pretrained(state_dict=...) is not supported for a LoRA backbone")
            parts = {"backbone.": {}, "head.": {}}
            for key, value in state_dict.items():
                prefix = next((p for p in parts if key.startswith(p)), None)
                if prefix is None:
                    raise ValueError(f"save_pretrained: unexpected key {key!r} in state_dict")
                parts[prefix][key[len(prefix) :]] = value
            path.mkdir(parents=True, exist_ok=True)
            (path / HEAD_CONFIG).unlink(missing_ok=True)
            self.backbone.save_pretrained(path, state_dict=parts["backbone."], safe_serialization=True)
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(path)
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in parts["head."].items()},
                str(path / HEAD_WEIGHTS),
            )
            (path / HEAD_CONFIG).write_text(json.dumps(self.head_config(False), indent=2) + "\n")
            return path
        path.mkdir(parents=True, exist_ok=True)
        (path / HEAD_CONFIG).unlink(missing_ok=True)  # the marker goes last
        merged = False
        if is_peft_model(self.backbone):
            if merge_lora:
                plain = copy.deepcopy(self.backbone).merge_and_unload()
                plain.save_pretrained(path, safe_serialization=True)
                merged = True
            else:
                base = self.backbone.get_base_model()
                base.save_pretrained(path, state_dict=base_state_dict(self.backbone), safe_serialization=True)
                self.backbone.save_pretrained(path / ADAPTER_DIR)
        else:
            self.backbone.save_pretrained(path, safe_serialization=True)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(path)
        head = {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
        save_file(head, str(path / HEAD_WEIGHTS))
        (path / HEAD_CONFIG).write_text(json.dumps(self.head_config(merged), indent=2) + "\n")
        return path

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, dtype: Any = None, device: Any = None, is_trainable: bool = True
    ) -> SequenceScorer:
        """Load a directory written by :meth:`save_pretrained` (the class is checked against its kind).

        ``SequenceScorer.from_pretrained`` returns whichever kind the directory holds, among
        the kinds whose modules are imported (:func:`nlhf.models.saved.load_scorer` imports
        both: the base class does not import its subclasses). The
        model comes back in eval mode; ``is_trainable=False`` also freezes every parameter
        (and loads a LoRA adapter in inference mode).
        """
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer

        from nlhf.models.loading import ModelLoadError, ensure_pad_token, resolve_dtype

        path = Path(path).expanduser()
        if not path.is_dir():
            raise ModelLoadError(f"model directory not found: {path}")
        if not (path / HEAD_CONFIG).is_file():
            raise ModelLoadError(
                f"{path} has no {HEAD_CONFIG}: not a saved preference/reward model (or an incomplete save); "
                f"for a fresh head on a pretrained backbone use {cls.__name__}.from_backbone({str(path)!r})"
            )
        meta = json.loads((path / HEAD_CONFIG).read_text())
        kind = meta.get("kind")
        target = SequenceScorer._kinds.get(kind)
        if target is None:
            raise ModelLoadError(
                f"{path / HEAD_CONFIG}: unknown kind {kind!r} (known: {sorted(SequenceScorer._kinds)}; "
                "nlhf.models.load_scorer knows every kind nlhf saves)"
            )
        if cls.kind and cls is not target:
            raise ModelLoadError(f"{path} holds a {kind!r} model ({target.__name__}), not a {cls.__name__}")
        version = meta.get("format_version", 0)
        if version > FORMAT_VERSION:
            raise ModelLoadError(f"{path / HEAD_CONFIG}: format_version {version} is newer than this nlhf "
                                 f"(reads up to {FORMAT_VERSION}); upgrade nlhf")  # fmt: skip
        if meta.get("pooling") not in POOLINGS:
            raise ModelLoadError(
                f"{path / HEAD_CONFIG}: unknown pooling {meta.get('pooling')!r} (known: {list(POOLINGS)})"
            )
        # format 1 had no input_layout: every causal-LM input was "marked"
        layout = meta.get("input_layout", "marked") if version >= 2 else "marked"
        if layout not in INPUT_LAYOUTS:
            raise ModelLoadError(
                f"{path / HEAD_CONFIG}: unknown input_layout {layout!r} (known: {list(INPUT_LAYOUTS)})"
            )
        kwargs: dict[str, Any] = {}
        if dtype is not None:
            kwargs["dtype"] = resolve_dtype(dtype)
        backbone = AutoModel.from_pretrained(str(path), **kwargs)
        lora_meta = meta.get("lora")
        lora = None
        if lora_meta is not None and not lora_meta.get("merged", False):  # merged: a plain checkpoint
            from peft import PeftModel

            lora = LoraSettings.from_dict(lora_meta)
            backbone = PeftModel.from_pretrained(backbone, str(path / ADAPTER_DIR), is_trainable=is_trainable)
        tokenizer = None
        if (path / "tokenizer_config.json").is_file() or (path / "tokenizer.json").is_file():
            tokenizer = ensure_pad_token(AutoTokenizer.from_pretrained(str(path)))
        try:
            extra = target.init_kwargs(meta)
        except ValueError as exc:
            raise ModelLoadError(f"{path / HEAD_CONFIG}: {exc}") from exc
        model = target(
            backbone,
            tokenizer,
            pooling=meta["pooling"],
            kind_of_backbone=meta["backbone_kind"],
            max_length=meta.get("max_length"),
            input_layout=layout,
            **extra,
        )
        model.lora = lora
        head = load_file(str(path / HEAD_WEIGHTS))
        model.head.load_state_dict(head)
        if not is_trainable:
            model.requires_grad_(False)
        if device is not None:
            model.to(device)
        return model.eval()
