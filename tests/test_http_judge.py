"""``--judge http://HOST:PORT/v1`` (nlhf.judges.http) against a stub OpenAI-compatible server on 127.0.0.1.

The stub answers p(A) = f(judge prompt) (a hash of the text) through top log-probs (or, told so, through
n sampled votes, round(n f) of them "A"), and can be told to fail: HTTP 500 for the first k calls, bad
JSON, replies without choices, slow answers, a dropped connection from call k on, answers that are no
label. It counts calls, the calls in flight and the Authorization headers it sees.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from nlhf.judges import LLM_JUDGE_TEMPLATE, load_judge
from nlhf.judges.http import HTTPJudge, HTTPJudgeError, parse_http_spec
from nlhf.models.files import ModelLoadError

KEY = "sk-test-5ecret-do-not-print"
PROMPTS = ["Say hi.", "Name a fruit.", "What is 1 + 1?", "Write a word."]
FIRST = ["Hello!", "An apple.", "2", "word"]
SECOND = ["Go away.", "A chair.", "3", "word"]  # the last pair: a response against itself


def stub_p(text: str) -> float:
    """The stub's p(label A | judge prompt): in [0.05, 0.95], a function of the text only."""
    return 0.05 + 0.9 * (int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF)


def render(prompt: str, a: str, b: str) -> str:
    return LLM_JUDGE_TEMPLATE.format(prompt=prompt, a=a, b=b, label_a="A", label_b="B")


def expected(prompt: str, a: str, b: str) -> float:
    return 0.5 * (stub_p(render(prompt, a, b)) + 1.0 - stub_p(render(prompt, b, a)))


class Stub:
    """The server's state and switches (the handler reads them under ``lock``)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.fail_first = 0  # HTTP 500 (echoing the Authorization header) for the first k POSTs
        self.drop_from: int | None = None  # close the connection without a reply from POST k on
        self.drop_when = None  # or a function: while it returns True, every POST is dropped
        self.mode = "logprobs"  # logprobs | no-logprobs | bad-json | no-choices | no-label
        self.delay = 0.0  # seconds each POST takes
        self.posts: list[dict] = []  # every POST body, in arrival order
        self.answered: list[str] = []  # the user turns of the POSTs answered with a 200
        self.auth: list[str | None] = []
        self.in_flight = self.max_in_flight = 0
        self.models = ["stub-judge"]

    def reply(self, body: dict) -> tuple[int, bytes]:
        text = body["messages"][0]["content"]
        p = stub_p(text)
        if self.mode == "bad-json":
            return 200, b'{"choices": [oops'
        if self.mode == "no-choices":
            return 200, json.dumps({"object": "error", "detail": "nothing"}).encode()
        if self.mode == "bad-logprobs":
            choice = {"index": 0, "message": {"content": "A"}, "logprobs": {"content": [{"token": "A"}]}}
            return 200, json.dumps({"choices": [choice]}).encode()
        if self.mode in ("no-logprobs", "no-label", "one-choice") or not body.get("logprobs"):
            n = 1 if self.mode == "one-choice" else int(body.get("n", 1))  # one-choice: a server ignoring n
            k = round(p * n)
            words = ["Maybe"] * n if self.mode == "no-label" else ["A"] * k + [" B."] * (n - k)
            choices = [
                {"index": i, "message": {"role": "assistant", "content": w}} for i, w in enumerate(words)
            ]
            return 200, json.dumps({"choices": choices}).encode()
        tops = [{"token": "A", "logprob": math.log(0.8 * p)}, {"token": "C", "logprob": math.log(0.15)},
                {"token": " B", "logprob": math.log(0.8 * (1 - p))}, {"token": "Response", "logprob": math.log(0.05)}]  # fmt: skip
        content = [{"token": "A", "logprob": tops[0]["logprob"], "top_logprobs": tops}]
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": "A"},
            "logprobs": {"content": content},
        }
        return 200, json.dumps({"choices": [choice]}).encode()


def make_handler(stub: Stub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            pass

        def send(self, code: int, payload: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            if stub.models is None:
                self.send(404, b'{"error": "no such route"}')
                return
            self.send(200, json.dumps({"data": [{"id": m} for m in stub.models]}).encode())

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with stub.lock:
                index = len(stub.posts)
                stub.posts.append(body)
                stub.auth.append(self.headers.get("Authorization"))
                stub.in_flight += 1
                stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
            try:
                time.sleep(stub.delay)
                dropped = stub.drop_when is not None and stub.drop_when()
                if dropped or (stub.drop_from is not None and index >= stub.drop_from):
                    self.close_connection = (
                        True  # no status line at all: the client sees a dropped connection
                    )
                    return
                if stub.mode == "unauthorized":  # a server that echoes the header it refuses
                    self.send(401, f"bad key {self.headers.get('Authorization')}".encode())
                    return
                if index < stub.fail_first:
                    self.send(500, f"overloaded; you sent {self.headers.get('Authorization')}".encode())
                    return
                code, payload = stub.reply(body)
                with stub.lock:
                    stub.answered.append(body["messages"][0]["content"])
                self.send(code, payload)
            finally:
                with stub.lock:
                    stub.in_flight -= 1

    return Handler


@pytest.fixture
def stub():
    state = Stub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    """The key in the environment, the default cache under tmp_path, no proxy for 127.0.0.1."""
    monkeypatch.setenv("NLHF_JUDGE_API_KEY", KEY)
    monkeypatch.setenv("NLHF_CACHE", str(tmp_path / "nlhf-cache"))
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def judge(stub: Stub, tmp_path, **kwargs) -> HTTPJudge:
    options = {"template": LLM_JUDGE_TEMPLATE, "cache": tmp_path / "cache.jsonl", "backoff": 0.01, "retries": 2,
               "timeout": 5.0, **kwargs}  # fmt: skip
    return HTTPJudge(stub.url, **options)


# ----------------------------------------------------------------------------- P and the requests


def test_p_is_both_orders_of_the_stubs_label_probabilities(stub, tmp_path):
    j = judge(stub, tmp_path)
    got = j.prob(PROMPTS, FIRST, SECOND)
    want = [expected(*row) for row in zip(PROMPTS, FIRST, SECOND)]
    assert got == pytest.approx(want, abs=1e-12)
    assert got[3] == 0.5  # P(a > a): both presentations are the same request
    swapped = j.prob(PROMPTS, SECOND, FIRST)
    assert [x + y for x, y in zip(got, swapped)] == pytest.approx([1.0] * 4, abs=1e-12)
    assert len({round(x, 6) for x in got[:3]}) == 3 and all(abs(x - 0.5) > 1e-3 for x in got[:3])
    assert len(stub.posts) == 7  # 8 presentations, the self-pair's two are one; the swap: all cached
    body = stub.posts[0]
    assert body["model"] == "stub-judge" and body["max_tokens"] == 1 and body["logprobs"] is True
    assert body["top_logprobs"] == 20 and body["temperature"] == 0
    assert [m["role"] for m in body["messages"]] == ["user"]


def test_load_judge_dispatches_http_specs_and_checks_the_values(stub, tmp_path):
    for spec in (f"{stub.url},backoff=0.01", f"http:{stub.url},cache={tmp_path / 'c2.jsonl'}"):
        j = load_judge(spec, batch_size=4)
        assert j.name == spec
        p = j.prob(PROMPTS, FIRST, SECOND)  # (4,) float32, through the checked judge
        assert p.shape == (4,) and p.tolist() == pytest.approx([expected(*r) for r in zip(PROMPTS, FIRST, SECOND)],
                                                                 abs=1e-6)  # fmt: skip
    assert list((tmp_path / "nlhf-cache" / "http-judge").glob("*.jsonl"))  # the default cache location


def test_labels_option_asks_for_those_labels(stub, tmp_path):
    url, options = parse_http_spec(f"{stub.url},labels=1/2,model=m,concurrency=3,timeout=2.5,votes=3")
    assert url == stub.url and options == {"labels": ("1", "2"), "model": "m", "concurrency": 3, "timeout": 2.5,
                                           "votes": 3}  # fmt: skip
    j = judge(stub, tmp_path, labels=("1", "2"), model="m")
    assert "Answer with one letter, 1 or 2." in j.render("x", "a", "b") and j.model_name == "m"


@pytest.mark.parametrize(
    ("spec", "needle"),
    [(",modle=x", "unknown option 'modle=x'"), (",timeout=0", "timeout='0'"), (",concurrency=0", "concurrency"),
     (",labels=A", "two different labels"), (",retries=-1", "retries"), (",votes=two", "votes")],
)  # fmt: skip
def test_bad_options_are_one_line_errors_naming_them(stub, spec, needle):
    with pytest.raises(ModelLoadError) as info:
        load_judge(stub.url + spec, batch_size=2)
    assert needle in str(info.value) and stub.url in str(info.value) and "\n" not in str(info.value)


def test_credentials_in_the_url_and_a_missing_key_variable_are_refused(stub, monkeypatch):
    with pytest.raises(ModelLoadError, match="credentials in the URL"):
        load_judge("http://user:pw@127.0.0.1:1/v1", batch_size=2)
    monkeypatch.delenv("MY_JUDGE_KEY", raising=False)
    with pytest.raises(ModelLoadError, match="MY_JUDGE_KEY is not set"):
        load_judge(f"{stub.url},api_key_env=MY_JUDGE_KEY", batch_size=2)


def test_the_served_model_is_asked_for_and_several_need_model_option(stub, tmp_path):
    stub.models = ["m1", "m2"]
    with pytest.raises(HTTPJudgeError, match=r"lists 2 models .*pass model=NAME"):
        judge(stub, tmp_path)
    assert judge(stub, tmp_path, model="m2").model_name == "m2"


# ----------------------------------------------------------------------------- faults


def test_transient_500s_are_retried(stub, tmp_path):
    stub.fail_first = 2
    j = judge(stub, tmp_path, retries=2, concurrency=1)
    assert j.prob(PROMPTS[:1], FIRST[:1], SECOND[:1]) == pytest.approx(
        [expected(PROMPTS[0], FIRST[0], SECOND[0])]
    )
    assert len(stub.posts) == 4 and len(stub.answered) == 2


def test_persistent_500s_are_one_line_naming_the_url_never_the_key(stub, tmp_path):
    stub.fail_first = 100
    j = load_judge(
        f"{stub.url},retries=2,backoff=0.01,cache={tmp_path / 'c.jsonl'},concurrency=1", batch_size=2
    )
    with pytest.raises(ModelLoadError) as info:
        j.prob(PROMPTS[:1], FIRST[:1], SECOND[:1])
    message = str(info.value)
    assert isinstance(info.value, HTTPJudgeError) and stub.url in message and "HTTP 500" in message
    assert "failed 3 time(s)" in message and "\n" not in message and KEY not in message
    assert len(stub.posts) == 3  # the first presentation's 3 attempts; the other was cancelled
    assert stub.auth[0] == f"Bearer {KEY}"


@pytest.mark.parametrize(
    ("mode", "needle"),
    [
        ("bad-json", "bad JSON"),
        ("no-choices", "a reply without choices"),
        ("bad-logprobs", "logprobs lack the expected fields"),
        ("unauthorized", "HTTP 401 Unauthorized"),
    ],
)
def test_nonsense_replies_are_errors_naming_the_url(stub, tmp_path, mode, needle):
    stub.mode = mode
    with pytest.raises(HTTPJudgeError) as info:
        judge(stub, tmp_path, concurrency=1).prob(PROMPTS[:2], FIRST[:2], SECOND[:2])
    assert needle in str(info.value) and stub.url in str(info.value) and KEY not in str(info.value)
    assert not (tmp_path / "cache.jsonl").read_text()  # no default value cached
    assert (
        len(stub.posts) == 1
    )  # not retried (only connection errors, timeouts, 429 and 5xx are), nothing after
    assert mode != "unauthorized" or "bad key Bearer ***" in str(info.value)


def test_slow_answers_time_out_and_say_so(stub, tmp_path):
    stub.delay = 1.0
    start = time.monotonic()
    with pytest.raises(HTTPJudgeError, match=r"failed 2 time\(s\).*(timed out|TimeoutError)") as info:
        judge(stub, tmp_path, timeout=0.2, retries=1, concurrency=4).prob(PROMPTS[:2], FIRST[:2], SECOND[:2])
    assert stub.url in str(info.value) and time.monotonic() - start < 3.0


def test_without_logprobs_votes_are_counted_and_said_once(stub, tmp_path):
    stub.mode = "no-logprobs"
    j = judge(stub, tmp_path, votes=4, concurrency=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = j.prob(PROMPTS, FIRST, SECOND)
    votes = [0.5 * (round(4 * stub_p(render(x, a, b))) / 4 + 1 - round(4 * stub_p(render(x, b, a))) / 4)
             for x, a, b in zip(PROMPTS, FIRST, SECOND)]  # fmt: skip
    assert got == pytest.approx(votes, abs=1e-12) and got[3] == 0.5
    said = [str(w.message) for w in caught if "no log-probs" in str(w.message)]
    assert len(said) == 1 and stub.url in said[0] and KEY not in said[0]
    assert all(
        b.get("n") == 4 and b["temperature"] == 1.0 for b in stub.posts[1:]
    )  # after the first: votes only


@pytest.mark.filterwarnings("ignore:.*no log-probs")
def test_a_server_that_ignores_n_is_asked_until_there_are_enough_votes(stub, tmp_path):
    stub.mode = "one-choice"  # each reply: one sampled answer, round(p) of it "A"
    got = judge(stub, tmp_path, votes=3, concurrency=1).prob(PROMPTS[:1], FIRST[:1], SECOND[:1])
    x, a, b = PROMPTS[0], FIRST[0], SECOND[0]
    assert got == [0.5 * (round(stub_p(render(x, a, b))) + 1 - round(stub_p(render(x, b, a))))]
    assert [body.get("n") for body in stub.posts] == [None, 3, 2, 1, 3, 2, 1]  # log-probs once, then votes


def test_a_server_without_models_listing_asks_for_model(stub, tmp_path):
    stub.models = None
    with pytest.raises(HTTPJudgeError, match=r"HTTP 404.*pass model=NAME") as info:
        judge(stub, tmp_path)
    assert stub.url in str(info.value)


@pytest.mark.filterwarnings("ignore:.*no log-probs")
def test_answers_that_are_no_label_are_an_error_not_a_tie(stub, tmp_path):
    stub.mode = "no-label"
    with pytest.raises(HTTPJudgeError, match=r"neither label \('A', 'B'\).*'Maybe'.*never counted as a tie"):
        judge(stub, tmp_path, votes=2, retries=1, concurrency=1).prob(PROMPTS[:1], FIRST[:1], SECOND[:1])


# ----------------------------------------------------------------------------- cache, resume, concurrency, key


def test_the_cache_answers_repeats_and_holds_no_key_or_text(stub, tmp_path):
    judge(stub, tmp_path).prob(PROMPTS, FIRST, SECOND)
    asked = len(stub.posts)
    again = judge(stub, tmp_path)  # a new process would read the same file
    assert again.prob(PROMPTS, FIRST, SECOND) == pytest.approx(
        [expected(*r) for r in zip(PROMPTS, FIRST, SECOND)]
    )
    assert len(stub.posts) == asked == 7
    text = (tmp_path / "cache.jsonl").read_text()
    assert len(text.splitlines()) == 7 and KEY not in text and "apple" not in text
    assert repr(again).startswith("HTTPJudge(") and KEY not in repr(again)


def test_a_dropped_connection_mid_run_then_a_rerun_loses_and_repeats_nothing(stub, tmp_path, monkeypatch):
    import nlhf.judges.http as module

    synced = []
    monkeypatch.setattr(module.os, "fsync", lambda fd: synced.append(fd))
    stub.drop_from = 3  # the 4th request on: the server hangs up
    with pytest.raises(HTTPJudgeError, match=r"failed 3 time\(s\).*unreachable or no complete reply") as info:
        judge(stub, tmp_path, concurrency=1).prob(PROMPTS, FIRST, SECOND)
    assert stub.url in str(info.value)
    first_run = list(stub.answered)
    assert len(first_run) == 3 and len((tmp_path / "cache.jsonl").read_text().splitlines()) == 3
    assert len(synced) == 1  # the failed batch's answers were fsynced before the error
    stub.drop_from, stub.answered = None, []
    got = judge(stub, tmp_path, concurrency=2).prob(PROMPTS, FIRST, SECOND)
    assert got == pytest.approx([expected(*r) for r in zip(PROMPTS, FIRST, SECOND)], abs=1e-12)
    assert len(stub.answered) == 4 and not set(stub.answered) & set(
        first_run
    )  # 7 distinct presentations in all


def test_a_truncated_last_cache_line_is_dropped_with_a_warning(stub, tmp_path):
    judge(stub, tmp_path).prob(PROMPTS[:2], FIRST[:2], SECOND[:2])
    path = tmp_path / "cache.jsonl"
    whole = path.read_bytes()
    path.write_bytes(whole[:-25])  # a kill in the middle of the last row
    with pytest.warns(UserWarning, match="truncated last line"):
        j = judge(stub, tmp_path)
    asked = len(stub.posts)
    assert j.prob(PROMPTS[:2], FIRST[:2], SECOND[:2]) == pytest.approx(
        [expected(*r) for r in zip(PROMPTS[:2], FIRST[:2], SECOND[:2])]
    )
    assert len(stub.posts) == asked + 1  # only the cut row is asked again
    assert path.read_bytes() == whole or sorted(path.read_bytes().splitlines()) == sorted(whole.splitlines())
    path.write_text('{"key": "k", "p": 0.5}\nnot json\n{"key": "j", "p": 0.5}\n')
    with pytest.raises(ValueError, match=r"cache.jsonl, line 2: not a cache row"):
        judge(stub, tmp_path)


@pytest.mark.parametrize("concurrency", [1, 3])
def test_concurrency_is_bounded(stub, tmp_path, concurrency):
    stub.delay = 0.1
    judge(stub, tmp_path, concurrency=concurrency).prob(PROMPTS[:3], FIRST[:3], SECOND[:3])  # 6 presentations
    assert stub.max_in_flight == concurrency


def test_the_key_is_sent_as_bearer_from_the_named_variable_and_only_there(stub, tmp_path, monkeypatch):
    monkeypatch.setenv("OTHER_KEY", "sk-other-1")
    judge(stub, tmp_path, api_key_env="OTHER_KEY").prob(PROMPTS[:1], FIRST[:1], SECOND[:1])
    assert set(stub.auth) == {"Bearer sk-other-1"}
    monkeypatch.delenv("NLHF_JUDGE_API_KEY")
    stub.auth = []
    judge(stub, tmp_path, cache="off").prob(PROMPTS[:1], FIRST[:1], SECOND[:1])
    assert set(stub.auth) == {None}  # no key anywhere: no header


# ----------------------------------------------------------------------------- the command line


def test_nash_md_trains_two_steps_with_an_http_judge(stub, tmp_path, capsys, one_thread):
    from nlhf.cli import main

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    out = tmp_path / "out"
    rc = main(["train", "nash-md", "--prompts", str(prompts), "--model", "tiny", "--judge", stub.url, "--out",
               str(out), "loop.max_steps=2", "loop.micro_batch_size=2", "loop.progress=false",
               "loop.tensorboard=false", "loop.min_free_disk_mb=1", "sampling.max_new_tokens=4",
               "judge_batch_size=3"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["steps"] == 2 and line["algorithm"] == "nash_md"
    assert len(stub.answered) >= 4 and f"judge: {stub.url}" in (out / "config.yaml").read_text()
    assert all(a == f"Bearer {KEY}" for a in stub.auth)


def test_train_with_an_unreachable_judge_is_one_line(tmp_path, capsys):
    from nlhf.cli import main

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "hi"}) + "\n")
    spec = "http://127.0.0.1:9/v1,retries=0"  # port 9 (discard): nothing listens
    rc = main(["train", "nash-md", "--prompts", str(prompts), "--model", "tiny", "--judge", spec, "--out",
               str(tmp_path / "out"), "loop.max_steps=1", "loop.progress=false", "loop.tensorboard=false"])  # fmt: skip
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("nlhf:")]
    assert rc == 2 and len(err) == 1 and repr(spec) in err[0] and "unreachable" in err[0]


def test_a_training_run_stopped_by_the_server_resumes_without_asking_again(
    stub, tmp_path, capsys, one_thread
):
    """The server hangs up once the step-1 checkpoint exists: a one-line error; ``loop.resume=true`` with the
    server back finishes the run and asks for no presentation the first run had answered."""
    from nlhf.cli import main
    from nlhf.train.checkpoint import list_checkpoints

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    out = tmp_path / "out"
    spec = f"{stub.url},retries=1,backoff=0.01,concurrency=2"
    argv = ["train", "nash-md", "--prompts", str(prompts), "--model", "tiny", "--judge", spec, "--out", str(out),
            "loop.max_steps=2", "loop.save_every=1", "loop.micro_batch_size=2", "loop.progress=false",
            "loop.tensorboard=false", "loop.min_free_disk_mb=1", "sampling.max_new_tokens=4"]  # fmt: skip
    stub.drop_when = lambda: bool(list_checkpoints(out))
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("nlhf:")]
    assert (
        len(err) == 1
        and stub.url in err[0]
        and "unreachable or no complete reply" in err[0]
        and KEY not in err[0]
    )
    assert [step for step, _ in list_checkpoints(out)] == [1]
    first = set(stub.answered)
    (cache,) = (tmp_path / "nlhf-cache" / "http-judge").glob("*.jsonl")
    assert first and len(cache.read_text().splitlines()) == len(first)  # every answer of run 1 is cached
    stub.drop_when, stub.answered = None, []
    assert main([*argv, "loop.resume=true"]) == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 2
    assert stub.answered and not set(stub.answered) & first  # step 2's pairs only


def test_eval_with_an_http_judge(stub, tmp_path, capsys, one_thread):
    from nlhf.cli import main

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS[:2]))
    rc = main(["eval", "--policy", "a=tiny", "--policy", "b=tiny:2", "--prompts", str(prompts), "--judge", stub.url,
               "--out", str(tmp_path / "eval"), "--max-new-tokens", "4", "--set", "bootstrap=20", "--no-progress"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    data = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert data["judge"] == stub.url and 0.0 <= data["win_rate"][0][1] <= 1.0 and stub.answered
