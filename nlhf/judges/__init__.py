"""Judges: anything that answers P(first > second | prompt) for a batch (THEORY.md Sec. 1, 2).

The online trainers, the evaluator and programmatic oracles only ever see this one
interface, so a learned preference model, a Bradley-Terry reward model and a Python
function are interchangeable::

    judge.prob(prompts, first, second) -> torch.Tensor (B,) float32 on CPU, values in [0, 1]

Adapters:

* :class:`PreferenceModelJudge`  a :class:`~nlhf.models.PairwisePreferenceModel`
* :class:`RewardModelJudge`      a :class:`~nlhf.models.RewardModel` (sigmoid(r - r'))
* :class:`CallableJudge`         a Python function (per example or batched)
* :class:`SymmetrizedJudge`      (J(a, b) + 1 - J(b, a)) / 2 for any judge J, which makes
  P(a > b) + P(b > a) = 1 and P(a > a) = 1/2 hold exactly
* :class:`HFRewardJudge`         any one-logit ``AutoModelForSequenceClassification`` reward
  model on its own chat template (``--judge hf-reward:PATH_OR_NAME``), sigmoid(r - r')
* :class:`LLMJudge`              a causal LM as a pairwise judge (``--judge llm:PATH_OR_NAME``):
  the next-token probabilities of two answer labels, averaged over both presentation orders
* ``--judge http://HOST:PORT/v1``        any OpenAI-compatible server as that pairwise judge
  (:class:`nlhf.judges.http.HTTPJudge`: label log-probs or sampled votes, both orders, cached)

:func:`load_judge` turns a ``--judge`` spec string into a judge (every trainer and ``nlhf eval``).

Every adapter checks what it returns: a value outside [0, 1] or NaN, or a result of the
wrong shape, is a ``ValueError`` naming the judge, the row and the value; it is never
clipped. (A ``GameJudge`` that maps a lab ``PreferenceGame`` onto token ids, and the
environment oracles of :mod:`nlhf.envs`, plug in by subclassing :class:`BaseJudge` and
implementing ``_prob``.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

    from nlhf.data.schema import Prompt


@runtime_checkable
class Judge(Protocol):
    """P(first > second | prompt), batched: ``prob(prompts, first, second) -> (B,)`` in [0, 1]."""

    def prob(
        self, prompts: Sequence[Prompt], first: Sequence[str], second: Sequence[str]
    ) -> torch.Tensor: ...


def judge_name(judge: Any) -> str:
    """A readable name for error messages."""
    return getattr(judge, "name", None) or type(judge).__name__


def check_batch(prompts: Sequence[Any], first: Sequence[Any], second: Sequence[Any], name: str) -> int:
    """The batch size B; a ``ValueError`` naming the judge if the three sequences differ in length."""
    sizes = (len(prompts), len(first), len(second))
    if len(set(sizes)) != 1:
        raise ValueError(f"judge {name}: prompts, first and second have different lengths {sizes}")
    return sizes[0]


def check_probabilities(values: Any, name: str, batch_size: int | None = None) -> torch.Tensor:
    """``values`` as a (B,) float32 CPU tensor, or a ``ValueError`` naming the judge and the bad value.

    Rejects NaN, values outside [0, 1] (no clipping: a judge that returns 1.02 is broken,
    and clipping would hide it), and results whose shape is not (batch_size,).
    """
    import torch

    try:
        probs = torch.as_tensor(values).detach()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(
            f"judge {name} returned {type(values).__name__}, not a sequence of numbers: {exc}"
        ) from exc
    if probs.dtype == torch.bool or not (
        probs.is_floating_point() or probs.dtype in (torch.int32, torch.int64)
    ):
        raise ValueError(f"judge {name} returned dtype {probs.dtype}; expected probabilities (floats)")
    probs = probs.to(device="cpu", dtype=torch.float32)
    if probs.ndim != 1 or (batch_size is not None and probs.shape[0] != batch_size):
        want = f"({batch_size},)" if batch_size is not None else "(B,)"
        raise ValueError(f"judge {name} returned shape {tuple(probs.shape)}; expected {want}")
    bad = torch.isnan(probs) | (probs < 0.0) | (probs > 1.0)
    if bool(bad.any()):
        rows = torch.nonzero(bad).flatten().tolist()
        i = rows[0]
        raise ValueError(
            f"judge {name} returned {probs[i].item():.6g} at row {i} (P(first > second) must be in [0, 1]; "
            f"{len(rows)} bad value(s), rows {rows[:10]})"
        )
    return probs


class BaseJudge:
    """Implements :class:`Judge`: subclasses write ``_prob``; ``prob`` checks inputs and outputs."""

    name: str = ""

    def _prob(self, prompts: Sequence[Prompt], first: Sequence[str], second: Sequence[str]) -> Any:
        raise NotImplementedError

    def prob(self, prompts: Sequence[Prompt], first: Sequence[str], second: Sequence[str]) -> torch.Tensor:
        """P(first > second | prompt) (B,) float32 on CPU, each value checked to lie in [0, 1]."""
        name = judge_name(self)
        batch = check_batch(prompts, first, second, name)
        if batch == 0:
            import torch

            return torch.zeros(0)
        return check_probabilities(self._prob(prompts, first, second), name, batch)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({judge_name(self)!r})"


class PreferenceModelJudge(BaseJudge):
    """A pairwise preference model as a judge (eval mode, no grad, in batches of ``batch_size``)."""

    def __init__(self, model: Any, *, batch_size: int = 16, name: str | None = None) -> None:
        self.model = model
        self.batch_size = batch_size
        self.name = name or f"PreferenceModelJudge({type(model).__name__})"

    def _prob(self, prompts: Sequence[Prompt], first: Sequence[str], second: Sequence[str]) -> Any:
        return self.model.prob(list(prompts), list(first), list(second), batch_size=self.batch_size)


class RewardModelJudge(BaseJudge):
    """A Bradley-Terry reward model as a judge: sigmoid(r(x, first) - r(x, second))."""

    def __init__(self, model: Any, *, batch_size: int = 16, name: str | None = None) -> None:
        self.model = model
        self.batch_size = batch_size
        self.name = name or f"RewardModelJudge({type(model).__name__})"

    def _prob(self, prompts: Sequence[Prompt], first: Sequence[str], second: Sequence[str]) -> Any:
        return self.model.prob(list(prompts), list(first), list(second), batch_size=self.batch_size)


class CallableJudge(BaseJudge):
    """A Python function as a judge.

    ``batched=False`` (default): ``fn(prompt, first, second) -> float`` per example.
    ``batched=True``: ``fn(prompts, firsts, seconds) -> sequence or tensor of B floats``.
    """

    def __init__(self, fn: Callable[..., Any], *, batched: bool = False, name: str | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"CallableJudge needs a callable, got {type(fn).__name__}")
        self.fn = fn
        self.batched = batched
        self.name = name or getattr(fn, "__qualname__", None) or repr(fn)

    def _prob(self, prompts: Sequence[Prompt], first: Sequence[str], second: Sequence[str]) -> Any:
        if self.batched:
            return self.fn(list(prompts), list(first), list(second))
        out = []
        for i, (p, a, b) in enumerate(zip(prompts, first, second)):
            value = self.fn(p, a, b)
            try:
                out.append(float(value))
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"judge {self.name} returned {value!r} at row {i}; expected a number"
                ) from exc
        return out


class SymmetrizedJudge(BaseJudge):
    """(J(a, b) + 1 - J(b, a)) / 2: a judge for which P(a > b) + P(b > a) = 1 exactly.

    Both orders go to the inner judge in ONE call of 2B rows (rows 0..B-1: (a, b); rows
    B..2B-1: (b, a)); the inner judge's values are checked too.
    """

    def __init__(self, judge: Judge, *, name: str | None = None) -> None:
        if not hasattr(judge, "prob"):
            raise TypeError(f"SymmetrizedJudge needs a judge with .prob, got {type(judge).__name__}")
        self.judge = judge
        self.name = name or f"Symmetrized({judge_name(judge)})"

    def _prob(self, prompts: Sequence[Prompt], first: Sequence[str], second: Sequence[str]) -> Any:
        b = len(prompts)
        both = self.judge.prob(list(prompts) * 2, list(first) + list(second), list(second) + list(first))
        both = check_probabilities(both, judge_name(self.judge), 2 * b)  # (2B,)
        return symmetrize(both[:b], both[b:])


def symmetrize(p_ab: torch.Tensor, p_ba: torch.Tensor) -> torch.Tensor:
    """(P(a > b) + 1 - P(b > a)) / 2 (THEORY.md Sec. 1: P(y > y') = 1 - P(y' > y))."""
    return 0.5 * (p_ab + 1.0 - p_ba)


HF_REWARD_PREFIX = "hf-reward:"  # --judge hf-reward:PATH_OR_NAME -> HFRewardJudge
LLM_PREFIX = "llm:"  # --judge llm:PATH_OR_NAME -> LLMJudge
HTTP_PREFIXES = ("http:", "https:")  # --judge http://HOST:PORT/v1 (or http:URL) -> nlhf.judges.http.HTTPJudge
JUDGE_SPECS = "a saved PM/RM directory (nlhf train-pm / train-rm), hf-reward:PATH_OR_NAME, llm:PATH_OR_NAME or http://HOST:PORT/v1"


def load_judge(path: str, batch_size: int) -> BaseJudge:
    """A judge from a spec string: what every trainer's ``--judge`` and ``nlhf eval --judge`` take.

    * ``hf-reward:PATH_OR_NAME``: any one-logit ``AutoModelForSequenceClassification`` reward
      model (a TRL RewardTrainer output directory, a hub name), :class:`HFRewardJudge`;
    * ``llm:PATH_OR_NAME``: a causal LM as a pairwise judge (``llm:smollm2``, ``llm:tiny``, a
      directory, a hub name; any spec of :func:`nlhf.models.loading.load_model`), :class:`LLMJudge`;
      options after commas: ``llm:M,template=FILE`` (a text file read as the template),
      ``llm:M,labels=X/Y`` (the two answer labels), see :func:`llm_judge_options`;
    * ``http://HOST:PORT/v1`` or ``https://...`` (``http:URL`` too): an OpenAI-compatible chat-completions
      server asked the ``llm:`` judge's question (:mod:`nlhf.judges.http`; options ``,model=NAME``,
      ``,template=FILE``, ``,labels=X/Y``, ``,concurrency=N``, ``,timeout=S``, ``,retries=N``, ``,cache=FILE``,
      ``,votes=N``, ``,api_key_env=VAR``, ...), wrapped in a checked :class:`CallableJudge`;
    * anything else: a directory saved by ``nlhf train-pm`` (preference model) or ``train-rm``
      (reward model).

    A spec that cannot be loaded is a one-line :class:`~nlhf.models.files.ModelLoadError`
    naming it (never a silent default).
    """
    spec = str(path)
    if spec.startswith(HTTP_PREFIXES):
        from nlhf.judges.http import load_http_judge  # the standard library only (urllib, threads)
        from nlhf.models.files import ModelLoadError, one_line

        try:
            remote = load_http_judge(spec, template=LLM_JUDGE_TEMPLATE)
        except Exception as exc:  # ValueError (an option), OSError (a template), HTTPJudgeError
            raise ModelLoadError(f"judge {spec!r} cannot be loaded: {one_line(exc)}") from exc
        return CallableJudge(remote.prob, batched=True, name=spec)
    if spec.startswith((HF_REWARD_PREFIX, LLM_PREFIX)):
        from nlhf.models.files import ModelLoadError, one_line

        kind, _, target = spec.partition(":")
        if not target:
            raise ModelLoadError(f"judge {spec!r}: expected {kind}:PATH_OR_NAME")
        cls = HFRewardJudge if kind + ":" == HF_REWARD_PREFIX else LLMJudge
        try:
            target, options = llm_judge_options(target) if cls is LLMJudge else (target, {})
            judge = cls.load(target, batch_size=batch_size, **options)
        except Exception as exc:  # OSError, ValueError, ModelLoadError, transformers' own errors
            raise ModelLoadError(f"judge {spec!r} cannot be loaded: {one_line(exc)}") from exc
        judge.name = spec
        return judge
    from nlhf.models.saved import load_scorer  # torch and transformers: only when a judge loads

    model = load_scorer(spec).eval()
    if model.kind == "reward":
        return RewardModelJudge(model, batch_size=batch_size)
    return PreferenceModelJudge(model, batch_size=batch_size)


LLM_OPTIONS = ("template", "labels")


def llm_judge_options(target: str) -> tuple[str, dict[str, Any]]:
    """``"M,template=FILE,labels=X/Y"`` -> ``("M", {"template": FILE's text, "labels": ("X", "Y")})``.

    Only trailing ``,template=`` / ``,labels=`` parts are options; a ``ValueError`` for a
    template file that cannot be read or labels that are not two.
    """
    options: dict[str, Any] = {}
    while True:
        head, sep, last = target.rpartition(",")
        key, eq, value = last.partition("=")
        if not sep or not eq or key not in LLM_OPTIONS or key in options:
            return target, options
        if key == "template":
            options[key] = Path(value).expanduser().read_text()
        else:
            labels = tuple(value.split("/"))
            if len(labels) != 2 or not all(labels):
                raise ValueError(f"labels={value!r}: expected two labels as X/Y")
            options[key] = labels
        target = head


def judge_preference(judge: Judge, prompts: Sequence[Any], first: Any, second: Any, tokenizer: Any) -> Any:
    """P(first > second | prompt) (B,) float32 on the rollouts' device, from the decoded response texts.

    ``first``, ``second``: :class:`nlhf.sampling.Rollout` of B rows each.
    """
    first_texts = first.response_texts(tokenizer)
    second_texts = second.response_texts(tokenizer)
    pref = judge.prob(list(prompts), first_texts, second_texts)  # (B,) CPU, checked by BaseJudge
    return pref.to(first.response_ids.device)


# ----------------------------------------------------------------------------- Hugging Face models as judges


def _device_of(model: Any) -> Any:
    """The device of ``model``'s first parameter (where the trainer or ``nlhf eval`` put it)."""
    return next(model.parameters()).device


def _has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


class HFRewardJudge(BaseJudge):
    """A one-logit ``AutoModelForSequenceClassification`` reward model as a Bradley-Terry judge.

    P(first > second | x) = sigmoid(r(x, first) - r(x, second)). (x, y) is rendered with the
    tokenizer's own chat template (the prompt's messages, then ``{"role": "assistant",
    "content": y}``; no generation prompt; no extra special tokens), or, when the tokenizer
    has none, as the plain layout :data:`PLAIN_REWARD_LAYOUT` (with the tokenizer's special
    tokens). Both responses of a batch are scored together, in forwards of ``batch_size``
    rows (right padding; the model picks its last non-pad token), on the model's device.
    """

    PLAIN_REWARD_LAYOUT = "{prompt}\n\nAssistant: {response}"

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 16, name: str | None = None) -> None:
        labels = getattr(getattr(model, "config", None), "num_labels", 1)
        if labels != 1:
            raise ValueError(f"a reward model has one logit; this one has num_labels={labels}")
        from nlhf.models.files import ensure_pad_token

        ensure_pad_token(tokenizer, model)
        self.model, self.tokenizer = model.eval(), tokenizer
        self.batch_size = int(batch_size)
        self.name = name or f"HFRewardJudge({type(model).__name__})"

    @classmethod
    def load(cls, name_or_path: str, *, batch_size: int = 16, dtype: Any = "float32") -> HFRewardJudge:
        """From a ``save_pretrained`` directory or a hub name (model and tokenizer)."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from nlhf.models.files import resolve_dtype

        path = Path(name_or_path).expanduser()
        where = str(path) if path.exists() else str(name_or_path)
        model = AutoModelForSequenceClassification.from_pretrained(where, dtype=resolve_dtype(dtype))
        return cls(model, AutoTokenizer.from_pretrained(where), batch_size=batch_size)

    def render(self, prompt: Prompt, response: str) -> str:
        """The text the reward model scores for (prompt, response)."""
        from nlhf.data.schema import prompt_messages, prompt_text

        if _has_chat_template(self.tokenizer):
            messages = prompt_messages(prompt) + [{"role": "assistant", "content": response}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        return self.PLAIN_REWARD_LAYOUT.format(prompt=prompt_text(prompt), response=response)

    def rewards(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> torch.Tensor:
        """r(x, y) for each row: (N,) float32 on the CPU."""
        import torch

        texts = [self.render(p, y) for p, y in zip(prompts, responses)]
        special = not _has_chat_template(self.tokenizer)
        out = []
        with torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(texts[i : i + self.batch_size], add_special_tokens=special, padding=True,
                                     padding_side="right", return_tensors="pt").to(_device_of(self.model))  # fmt: skip
                out.append(self.model(**enc).logits[:, 0].float().cpu())
        return torch.cat(out) if out else torch.zeros(0)

    def _prob(self, prompts: Sequence[Prompt], first: Sequence[str], second: Sequence[str]) -> Any:
        import torch

        b = len(prompts)
        r = self.rewards(list(prompts) * 2, list(first) + list(second))  # one pass over both responses
        return torch.sigmoid(r[:b] - r[b:])


LLM_JUDGE_TEMPLATE = (
    "Which response is the better answer to the request: more helpful, more honest and more harmless?\n\n"
    "Request:\n{prompt}\n\n"
    "Response {label_a}:\n{a}\n\n"
    "Response {label_b}:\n{b}\n\n"
    "Answer with one letter, {label_a} or {label_b}."
)


class LLMJudge(BaseJudge):
    """A causal LM as a pairwise judge, averaged over both presentation orders.

    ``template`` (any string with ``{prompt}``, ``{a}`` and ``{b}``; ``{label_a}`` and
    ``{label_b}`` are filled with ``labels``) is sent as one user turn through the
    tokenizer's chat template with the generation prompt (without a chat template: the text
    plus ``"\n\nAnswer:"``, and the labels are read with a leading space). With
    p(o) = softmax over the two labels' next-token logits of presentation o, renormalised
    over the two labels only, and o = (a shown as label A, b as B) or the swapped one::

        P(a > b) = 0.5 * (p_(a,b)(A) + 1 - p_(b,a)(A))

    so P(a > b) + P(b > a) = 1 and P(a > a) = 1/2 (up to float rounding) and the position
    bias of the LM cancels. Both orders of every pair go through the model together, in
    forwards of ``batch_size`` rows (left padding, position ids from the mask, last-position
    logits), on the model's device.
    """

    def __init__(self, model: Any, tokenizer: Any, *, template: str = LLM_JUDGE_TEMPLATE,
                 labels: tuple[str, str] = ("A", "B"), batch_size: int = 16, name: str | None = None) -> None:  # fmt: skip
        missing = [f for f in ("{prompt}", "{a}", "{b}") if f not in template]
        if missing:
            raise ValueError(f"LLMJudge template lacks {', '.join(missing)}")
        from nlhf.models.files import ensure_pad_token

        ensure_pad_token(tokenizer, model)
        self.model, self.tokenizer = model.eval(), tokenizer
        self.template, self.labels = template, (str(labels[0]), str(labels[1]))
        self.batch_size = int(batch_size)
        self.label_ids = self._label_ids()
        self.name = name or f"LLMJudge({type(model).__name__})"

    @classmethod
    def load(cls, spec: str, *, batch_size: int = 16, dtype: Any = "float32", **kwargs: Any) -> LLMJudge:
        """From any spec of :func:`nlhf.models.loading.load_model` (``smollm2``, ``tiny``, a directory, a hub name)."""
        from nlhf.models.loading import load_model

        model, tokenizer = load_model(spec, dtype=dtype)
        return cls(model, tokenizer, batch_size=batch_size, **kwargs)

    def _label_ids(self) -> tuple[int, int]:
        """The first token id of each label as it follows the judge prompt; the two must differ."""
        lead = "" if _has_chat_template(self.tokenizer) else " "
        ids = []
        for label in self.labels:
            enc = self.tokenizer(lead + label, add_special_tokens=False)["input_ids"]
            if not enc:
                raise ValueError(f"LLMJudge label {label!r} encodes to no token")
            ids.append(int(enc[0]))
        if ids[0] == ids[1]:
            raise ValueError(f"LLMJudge labels {self.labels} start with the same token {ids[0]}")
        return ids[0], ids[1]

    def render(self, prompt: Prompt, a: str, b: str) -> str:
        """The judge prompt for showing ``a`` as the first label and ``b`` as the second."""
        from nlhf.data.schema import prompt_text

        text = self.template.format(prompt=prompt_text(prompt), a=a, b=b, label_a=self.labels[0],
                                    label_b=self.labels[1])  # fmt: skip
        if _has_chat_template(self.tokenizer):
            messages = [{"role": "user", "content": text}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text + "\n\nAnswer:"

    def first_label_probs(self, texts: Sequence[str]) -> torch.Tensor:
        """p(label A) renormalised over the two labels, for each rendered judge prompt: (N,) float64 on the CPU."""
        import torch

        special = not _has_chat_template(self.tokenizer)
        out = []
        with torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(list(texts[i : i + self.batch_size]), add_special_tokens=special, padding=True,
                                     padding_side="left", return_tensors="pt").to(_device_of(self.model))  # fmt: skip
                mask = enc["attention_mask"]
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                logits = self.model(input_ids=enc["input_ids"], attention_mask=mask, position_ids=positions)
                pair = logits.logits[
                    :, -1, list(self.label_ids)
                ].double()  # (n, 2): labels A, B, last position
                out.append(torch.softmax(pair, dim=-1)[:, 0].cpu())
        return torch.cat(out)

    def _prob(self, prompts: Sequence[Prompt], first: Sequence[str], second: Sequence[str]) -> Any:
        b = len(prompts)
        texts = [self.render(p, x, y) for p, x, y in zip(prompts, first, second)]
        texts += [self.render(p, y, x) for p, x, y in zip(prompts, first, second)]
        p_a = self.first_label_probs(texts)  # rows 0..b-1: order (first, second); b..2b-1: (second, first)
        return symmetrize(p_a[:b], p_a[b:]).float()
