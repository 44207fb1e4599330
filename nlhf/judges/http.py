"""``--judge http://HOST:PORT/v1``: any OpenAI-compatible chat-completions server as a pairwise judge.

vLLM, TGI, a llama.cpp server or a hosted API judges P(a > b | x) the way :class:`nlhf.judges.LLMJudge`
does locally: the same pairwise prompt (``template``, ``{label_a}`` / ``{label_b}`` = ``labels``) as one
user turn, POSTed to ``{url}/chat/completions`` with ``max_tokens: 1``, ``logprobs: true``,
``top_logprobs: 20``, ``temperature: 0``. With p_o(A) the probability of label A renormalised over the
two labels (the top tokens compared after stripping whitespace; tokens that strip to the same label are
summed; a label outside the top 20 counts as 0) in presentation o::

    P(a > b) = 0.5 * (p_(a,b)(A) + 1 - p_(b,a)(A))

so P(a > b) + P(b > a) = 1 and P(a > a) = 1/2. Where the server returns no log-probs (or neither label
is among the top ones), p_o(A) is the share of ``votes`` sampled answers (temperature 1) that start
with label A, said once in a warning naming the URL; an answer that is neither label is asked again up
to ``retries`` times, then an error (never counted as a tie).

Requests run in a pool of ``concurrency`` threads, each with a ``timeout``; connection errors,
timeouts, HTTP 429 and 5xx are retried ``retries`` times with exponential backoff and jitter (a
``Retry-After`` header is honoured); then, and for any other failure (HTTP 4xx, bad JSON, a reply
without the expected fields), a one-line :class:`HTTPJudgeError` naming the URL. The API key comes from
the environment (``api_key_env=VAR``; default ``NLHF_JUDGE_API_KEY``, else ``OPENAI_API_KEY``), is sent
as ``Authorization: Bearer`` and never appears in a message, a log or the cache.

Every answered presentation is appended to a JSONL cache (one line per presentation: a SHA-256 of
(model, template, labels, prompt, shown first, shown second) and p(A); written as it arrives, fsynced
after each batch, also when the batch fails), so a run killed or stopped by the server and resumed
asks for no presentation already answered. A truncated last line (a kill mid-write) is dropped with a
warning. Default file: ``$NLHF_CACHE/http-judge/<hash of url, model, template>.jsonl`` (``NLHF_CACHE``
defaults to ``~/.cache/nlhf``); ``cache=FILE`` or ``cache=off``.

Only the standard library (urllib, threads). :func:`nlhf.judges.load_judge` wraps :class:`HTTPJudge`
in a checked judge; this module does not import :mod:`nlhf.judges` (the template comes as an argument).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import math
import os
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from nlhf.data.schema import prompt_text
from nlhf.models.files import ModelLoadError, default_cache_dir

KEY_ENVS = ("NLHF_JUDGE_API_KEY", "OPENAI_API_KEY")  # read in this order when api_key_env is not given
TOP_LOGPROBS = 20
MAX_BACKOFF_S = 60.0
OPTIONS = ("model", "template", "labels", "concurrency", "timeout", "retries", "backoff", "cache", "votes",
           "api_key_env")  # fmt: skip


class HTTPJudgeError(ModelLoadError):
    """The judge server cannot be used: the message names the URL and what went wrong (one line)."""


# ----------------------------------------------------------------------------- the spec


def parse_http_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"http://h:1/v1,model=M,timeout=5"`` -> ``("http://h:1/v1", {"model": "M", "timeout": 5.0})``.

    ``http:URL`` is accepted too. Every part after the first comma must be ``key=value`` with a key of
    :data:`OPTIONS` (a ``ValueError`` otherwise: a misspelt option is never read as part of the URL).
    """
    body = spec[len("http:") :] if spec.startswith("http:") and not spec.startswith("http://") else spec
    url, *parts = body.split(",")
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(
            f"judge {spec!r}: expected http://HOST:PORT/PATH or https://... (then ,key=value options)"
        )
    if parsed.username or parsed.password:
        raise ValueError("judge URL: credentials in the URL are not accepted; put the key in an environment "
                         "variable (api_key_env=VAR, default NLHF_JUDGE_API_KEY or OPENAI_API_KEY)")  # fmt: skip
    options: dict[str, Any] = {}
    for part in parts:
        key, eq, value = part.partition("=")
        if not eq or key not in OPTIONS:
            raise ValueError(f"judge {url}: unknown option {part!r} (options: {', '.join(OPTIONS)})")
        if key in options:
            raise ValueError(f"judge {url}: option {key} given twice")
        options[key] = _option_value(url, key, value)
    return url.rstrip("/"), options


def _option_value(url: str, key: str, value: str) -> Any:
    """One option's value, checked; a ``ValueError`` naming the URL and the key."""
    if key == "template":
        return Path(value).expanduser().read_text()
    if key == "labels":
        labels = tuple(value.split("/"))
        if len(labels) != 2 or not all(labels) or labels[0] == labels[1]:
            raise ValueError(f"judge {url}: labels={value!r}: expected two different labels as X/Y")
        return labels
    if key in ("model", "cache", "api_key_env"):
        if not value:
            raise ValueError(f"judge {url}: {key}= is empty")
        return value
    kind, low = (float, 0.0) if key in ("timeout", "backoff") else (int, 1 if key != "retries" else 0)
    try:
        number = kind(value)
    except ValueError:
        number = None
    if number is None or not math.isfinite(number) or number < low or (key == "timeout" and number == 0):
        raise ValueError(f"judge {url}: {key}={value!r}: expected a {'number' if kind is float else 'whole number'} "
                         f"{'> 0' if key == 'timeout' else f'>= {low}'}")  # fmt: skip
    return number


def load_http_judge(spec: str, *, template: str, **overrides: Any) -> HTTPJudge:
    """An :class:`HTTPJudge` from a ``--judge`` spec; ``template``: the default pairwise template."""
    url, options = parse_http_spec(spec)
    options = {"template": template, **options, **overrides}
    return HTTPJudge(url, name=spec, **options)


def api_key_from_env(api_key_env: str | None) -> str | None:
    """The key in ``$api_key_env`` (an error naming the variable, not its value, when unset), else in the
    first set variable of :data:`KEY_ENVS`, else None (no ``Authorization`` header)."""
    if api_key_env is not None:
        key = os.environ.get(api_key_env)
        if not key:
            raise ValueError(f"api_key_env={api_key_env}: the environment variable {api_key_env} is not set")
        return key
    return next((os.environ[v] for v in KEY_ENVS if os.environ.get(v)), None)


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------- the cache


class ResponseCache:
    """An append-only JSONL file of answered presentations: ``{"key": sha256, "p": p(A), "how": ...}``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._fd = -1
        self.path = Path(path).expanduser()
        self.values: dict[str, float] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._load()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def _load(self) -> None:
        data = self.path.read_bytes()
        complete, _, tail = data.rpartition(b"\n")
        if tail:  # no newline at the end: a kill mid-write (one write per line, so at most this line)
            warnings.warn(f"judge cache {self.path}: dropping a truncated last line ({len(tail)} bytes)",
                          stacklevel=3)  # fmt: skip
            with open(self.path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)
        for number, line in enumerate(complete.split(b"\n") if complete else [], start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                key, p = row["key"], float(row["p"])
                if not isinstance(key, str) or not 0.0 <= p <= 1.0:
                    raise ValueError(
                        f"p={p} outside [0, 1]" if isinstance(key, str) else "key is not a string"
                    )
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"judge cache {self.path}, line {number}: not a cache row ({exc}); "
                                 "delete the file or pass cache=another file") from exc  # fmt: skip
            self.values[key] = p

    def get(self, key: str) -> float | None:
        return self.values.get(key)

    def put(self, key: str, p: float, how: str) -> None:
        """Append one row (one ``write``, so a kill leaves at most a truncated last line)."""
        self.values[key] = p
        os.write(self._fd, (json.dumps({"key": key, "p": p, "how": how}) + "\n").encode("utf-8"))

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        try:
            self.close()
        except OSError:
            pass


# ----------------------------------------------------------------------------- the judge


class HTTPJudge:
    """P(first > second | prompt) from an OpenAI-compatible chat-completions server (module docstring).

    ``prob`` returns B floats; :func:`nlhf.judges.load_judge` wraps it in a checked judge.
    """

    def __init__(self, url: str, *, template: str, labels: tuple[str, str] = ("A", "B"), model: str | None = None,
                 concurrency: int = 8, timeout: float = 60.0, retries: int = 4, backoff: float = 1.0,
                 cache: str | os.PathLike[str] | None = None, votes: int = 5, api_key_env: str | None = None,
                 name: str | None = None) -> None:  # fmt: skip
        missing = [f for f in ("{prompt}", "{a}", "{b}") if f not in template]
        if missing:
            raise ValueError(f"judge {url}: the template lacks {', '.join(missing)}")
        if concurrency < 1 or retries < 0 or votes < 1 or timeout <= 0 or backoff < 0:
            raise ValueError(f"judge {url}: concurrency and votes must be >= 1, retries and backoff >= 0, "
                             "timeout > 0")  # fmt: skip
        self.url, self.name = url.rstrip("/"), name or url
        self.template, self.labels = template, (str(labels[0]), str(labels[1]))
        self.concurrency, self.timeout, self.retries = int(concurrency), float(timeout), int(retries)
        self.backoff, self.votes = float(backoff), int(votes)
        self._api_key = api_key_from_env(api_key_env)
        self.requests, self._count_lock = 0, threading.Lock()  # HTTP requests sent (attempts included)
        self.model_name = model or self._served_model()
        self.no_logprobs = False  # set when the server answered without log-probs: votes from then on
        self._warned: set[str] = set()
        if cache is None:
            base = default_cache_dir().parent / "http-judge"
            cache = base / f"{_digest(self.url, self.model_name, self.template)[:16]}.jsonl"
        self.cache = None if str(cache) == "off" else ResponseCache(cache)

    def __repr__(self) -> str:  # no key, ever
        return f"HTTPJudge({self.url!r}, model={self.model_name!r})"

    # ------------------------------------------------------------------ HTTP

    def _error(self, what: str) -> HTTPJudgeError:
        text = " ".join(what.split())
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return HTTPJudgeError(f"judge {self.url}: {text[:400]}")

    def _request(self, path: str, payload: dict[str, Any] | None = None) -> Any:
        """The JSON reply of GET (no payload) or POST ``{url}{path}``, retried on transient failures."""
        url = self.url + path
        headers = {"Accept": "application/json"}
        data = None
        if payload is not None:
            data, headers["Content-Type"] = json.dumps(payload).encode("utf-8"), "application/json"
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        last, wait = "", 0.0
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(max(wait, self._backoff(attempt)))
            with self._count_lock:
                self.requests += 1
            try:
                request = urllib.request.Request(url, data=data, headers=headers)
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    body = response.read()
            except urllib.error.HTTPError as exc:
                try:
                    snippet = exc.read()[:200].decode("utf-8", "replace")
                except (OSError, http.client.HTTPException):
                    snippet = ""
                if exc.code != 429 and exc.code < 500:
                    raise self._error(f"HTTP {exc.code} {exc.reason} from {path}: {snippet}") from None
                last, wait = f"HTTP {exc.code} {exc.reason}", _retry_after(exc.headers.get("Retry-After"))
                continue
            except (OSError, http.client.HTTPException) as exc:  # refused, reset, timeout, dropped mid-reply
                reason = getattr(exc, "reason", None) or exc
                last, wait = f"unreachable or no complete reply ({type(exc).__name__}: {reason})", 0.0
                continue
            try:
                return json.loads(body)
            except (ValueError, UnicodeDecodeError):
                raise self._error(
                    f"bad JSON from {path}: {body[:200].decode('utf-8', 'replace')!r}"
                ) from None
        raise self._error(f"{path} failed {self.retries + 1} time(s) (retries={self.retries}); last: {last}")

    def _backoff(self, attempt: int) -> float:
        """backoff * 2^(attempt - 1), times a jitter in [1, 1.5), at most MAX_BACKOFF_S."""
        return min(MAX_BACKOFF_S, self.backoff * 2 ** (attempt - 1) * (1.0 + 0.5 * random.random()))

    def _served_model(self) -> str:
        """The one model ``GET {url}/models`` lists (an error when it lists none or several: pass model=)."""
        try:
            reply = self._request("/models")
        except HTTPJudgeError as exc:
            raise HTTPJudgeError(
                f"{exc}; pass model=NAME where the server does not list its models"
            ) from None
        data = reply.get("data") if isinstance(reply, dict) else None
        ids = [m.get("id") for m in data if isinstance(m, dict)] if isinstance(data, list) else []
        if not ids or not all(isinstance(i, str) and i for i in ids):
            raise self._error("/models lists no model; pass model=NAME")
        if len(ids) > 1:
            raise self._error(f"/models lists {len(ids)} models {ids[:5]}; pass model=NAME")
        return ids[0]

    def _warn_once(self, what: str) -> None:
        if what not in self._warned:
            self._warned.add(what)
            warnings.warn(f"judge {self.url}: {what}", stacklevel=2)

    # ------------------------------------------------------------------ one presentation

    def render(self, prompt: Any, a: str, b: str) -> str:
        """The judge prompt showing ``a`` as the first label and ``b`` as the second (one user turn)."""
        return self.template.format(prompt=prompt_text(prompt), a=a, b=b, label_a=self.labels[0],
                                    label_b=self.labels[1])  # fmt: skip

    def _choices(self, reply: Any) -> list[dict[str, Any]]:
        choices = reply.get("choices") if isinstance(reply, dict) else None
        if not isinstance(choices, list) or not choices or not all(isinstance(c, dict) for c in choices):
            raise self._error(f"a reply without choices: {json.dumps(reply)[:200]}")
        return choices

    def _top_logprobs(self, choice: dict[str, Any]) -> list[tuple[str, float]] | None:
        """The first generated token's top (token, logprob) list; None when the reply has no log-probs."""
        lp = choice.get("logprobs")
        if lp is None or (isinstance(lp, dict) and not lp.get("content") and "top_logprobs" not in lp):
            return None
        try:
            if isinstance(lp.get("content"), list):  # chat completions: content[0].top_logprobs
                tops = [(t["token"], t["logprob"]) for t in lp["content"][0]["top_logprobs"]]
            else:  # the completions layout: top_logprobs[0] = {token: logprob}
                tops = list(lp["top_logprobs"][0].items())
        except (AttributeError, KeyError, IndexError, TypeError) as exc:
            raise self._error(f"a reply whose logprobs lack the expected fields ({type(exc).__name__}: {exc}): "
                              f"{json.dumps(lp)[:200]}") from None  # fmt: skip
        for token, logprob in tops:
            if not isinstance(token, str) or isinstance(logprob, bool) or not isinstance(logprob, int | float) \
                    or not logprob <= 1e-6:  # fmt: skip
                raise self._error(f"a reply with a bad top log-prob {token!r}: {logprob!r}")
        return tops

    def _logprob_p(self, text: str) -> float | None:
        """p(label A) renormalised over the two labels from the top log-probs; None: ask votes instead."""
        if self.no_logprobs:
            return None
        payload = {"model": self.model_name, "messages": [{"role": "user", "content": text}], "max_tokens": 1,
                   "logprobs": True, "top_logprobs": TOP_LOGPROBS, "temperature": 0}  # fmt: skip
        tops = self._top_logprobs(self._choices(self._request("/chat/completions", payload))[0])
        if tops is None:
            self.no_logprobs = True
            self._warn_once(f"the server returns no log-probs; P from {self.votes} sampled votes per presentation "
                            "(temperature 1)")  # fmt: skip
            return None
        mass = [0.0, 0.0]
        for token, logprob in tops:
            for i, label in enumerate(self.labels):
                if token.strip() == label:
                    mass[i] += math.exp(logprob)
        if mass[0] + mass[1] == 0.0:
            self._warn_once(f"neither label {self.labels} among the top {TOP_LOGPROBS} tokens of some prompts; "
                            f"P from {self.votes} sampled votes there (temperature 1)")  # fmt: skip
            return None
        return mass[0] / (mass[0] + mass[1])

    def _label_of(self, answer: str) -> int | None:
        """0 / 1 for an answer that starts with label A / B (the longer label first), else None."""
        text = answer.strip()
        for i in sorted((0, 1), key=lambda j: -len(self.labels[j])):
            if text.startswith(self.labels[i]):
                return i
        return None

    def _votes_p(self, text: str) -> float:
        """The share of ``votes`` answers sampled at temperature 1 that start with label A."""
        counts, bad = [0, 0], []
        while counts[0] + counts[1] < self.votes:
            need = self.votes - counts[0] - counts[1]
            payload = {"model": self.model_name, "messages": [{"role": "user", "content": text}],
                       "max_tokens": max(len(label) for label in self.labels) + 4, "temperature": 1.0, "n": need}  # fmt: skip
            for choice in self._choices(self._request("/chat/completions", payload))[:need]:
                message = choice.get("message")
                content = message.get("content") if isinstance(message, dict) else None
                if not isinstance(content, str):
                    raise self._error(
                        f"a reply without choices[].message.content: {json.dumps(choice)[:200]}"
                    )
                label = self._label_of(content)
                if label is None:
                    bad.append(content)
                else:
                    counts[label] += 1
            if len(bad) > self.retries:
                raise self._error(f"{len(bad)} sampled answers are neither label {self.labels} (retries={self.retries}), "
                                  f"e.g. {bad[0][:80]!r}; a vote is never counted as a tie")  # fmt: skip
        return counts[0] / self.votes

    def presentation_p(self, text: str) -> tuple[float, str]:
        """(p(label A), how: ``logprobs`` or ``votes``) for one rendered judge prompt."""
        p = self._logprob_p(text)
        return (p, "logprobs") if p is not None else (self._votes_p(text), "votes")

    # ------------------------------------------------------------------ batches

    def key(self, prompt: Any, a: str, b: str) -> str:
        """The cache key of showing ``a`` first and ``b`` second."""
        return _digest(self.model_name, self.template, list(self.labels), prompt_text(prompt), a, b)

    def first_label_probs(
        self, prompts: Sequence[Any], shown_a: Sequence[str], shown_b: Sequence[str]
    ) -> list[float]:
        """p(label A) for each presentation (prompt, shown_a, shown_b): cached ones from the cache, the others
        asked ``concurrency`` at a time (each distinct presentation once); every answer cached as it comes."""
        keys = [self.key(p, a, b) for p, a, b in zip(prompts, shown_a, shown_b)]
        found: dict[str, float] = {}
        todo: dict[str, str] = {}
        for k, p, a, b in zip(keys, prompts, shown_a, shown_b):
            cached = self.cache.get(k) if self.cache is not None else None
            if cached is not None:
                found[k] = cached
            elif k not in todo:
                todo[k] = self.render(p, a, b)
        if todo:
            self._ask(todo, found)
        return [found[k] for k in keys]

    def _ask(self, todo: dict[str, str], found: dict[str, float]) -> None:
        """Ask for every presentation of ``todo`` (key -> text) into ``found``; on the first failure the
        queued ones are cancelled, the ones in flight finish (and are cached), then the error is raised."""
        error: BaseException | None = None
        stop = threading.Event()  # set on the first failure: the queued presentations are skipped, not asked

        def ask(text: str) -> tuple[float, str] | None:
            if stop.is_set():
                return None
            try:
                return self.presentation_p(text)
            except BaseException:
                stop.set()  # here, not in the caller's loop: a free worker takes the next one at once
                raise

        # no Future.cancel(): as_completed never hears of a future cancelled by shutdown(cancel_futures=True)
        pool = ThreadPoolExecutor(
            max_workers=min(self.concurrency, len(todo)), thread_name_prefix="nlhf-judge"
        )
        try:
            futures = {pool.submit(ask, text): k for k, text in todo.items()}
            for future in as_completed(futures):
                if future.exception() is not None:
                    error = error or future.exception()
                    stop.set()
                elif future.result() is not None:  # None: skipped after a failure
                    p, how = future.result()
                    found[futures[future]] = p
                    if self.cache is not None:
                        self.cache.put(futures[future], p, how)
        finally:
            stop.set()  # an interrupt (KeyboardInterrupt) also leaves only the requests in flight to finish
            pool.shutdown(wait=True)
            if self.cache is not None:
                self.cache.sync()
        if error is not None:
            raise error

    def prob(self, prompts: Sequence[Any], first: Sequence[str], second: Sequence[str]) -> list[float]:
        """P(first > second | prompt) for each row: both presentation orders averaged (B floats)."""
        n = len(prompts)
        p = self.first_label_probs(list(prompts) * 2, list(first) + list(second), list(second) + list(first))
        return [0.5 * (p[i] + 1.0 - p[n + i]) for i in range(n)]


def _retry_after(value: str | None) -> float:
    """A ``Retry-After`` header in seconds (0 when absent or a date), at most MAX_BACKOFF_S."""
    try:
        return min(MAX_BACKOFF_S, max(0.0, float(value))) if value else 0.0
    except ValueError:
        return 0.0
