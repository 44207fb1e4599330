"""Memory and speed knobs of the trainers (issue 16, point 2): gradient checkpointing, the attention kernel,
dtype ``auto``, QLoRA's refusal off CUDA, and offline DPO's separate reference model.

Gradient checkpointing is checked on a real loss (DPO on sequence log-probs of the tiny Llama):
the same gradients to 1e-6 with and without it, and fewer bytes saved for backward, counted by
a ``saved_tensors_hooks`` pack hook (deterministic: sizes only; parameters left out). The
numbers (4 layers, batch 4 x 48 tokens, fp32) are in the README's "Memory and speed" section.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import yaml

from nlhf.cli import main
from nlhf.config import ConfigError
from nlhf.data.collate import tokenize_pair
from nlhf.data.schema import PreferenceExample
from nlhf.losses import get_loss
from nlhf.models.loading import load_causal_lm, load_model
from nlhf.models.lora import LoraSettings, apply_lora
from nlhf.models.memory import (
    check_attn_implementation,
    check_quantize,
    enable_gradient_checkpointing,
    resolve_auto_dtype,
)
from nlhf.models.tiny import tiny_causal_lm, tiny_tokenizer
from nlhf.sampling.shared_prompt import can_share_prompt
from nlhf.train import ref_cache
from nlhf.train.config import LoopConfig, OptimConfig
from nlhf.train.dpo import OfflineConfig, run_offline
from nlhf.train.nash_md import NashMDConfig
from nlhf.train.pair_logps import sequence_logps
from nlhf.train.run import load_policy_model, resolve_model_settings


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def fake_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


# ----------------------------------------------------------------------------- dtype auto


def test_auto_dtype_is_float32_on_cpu_and_bfloat16_on_cuda(monkeypatch):
    """auto -> float32 without a GPU; with (faked) CUDA -> bfloat16 unless loop.device=cpu; explicit values kept."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_auto_dtype("auto") == "float32"
    assert resolve_auto_dtype("float16") == "float16"
    fake_cuda(monkeypatch)
    assert resolve_auto_dtype("auto") == "bfloat16"
    assert resolve_auto_dtype("auto", "cuda") == "bfloat16"
    assert resolve_auto_dtype("auto", "cpu") == "float32"
    assert resolve_auto_dtype("float32") == "float32"
    cfg = NashMDConfig(model="tiny")
    assert cfg.dtype == "auto"
    assert resolve_model_settings(cfg).dtype == "bfloat16"
    assert resolve_model_settings(NashMDConfig(loop=LoopConfig(device="cpu"))).dtype == "float32"
    assert resolve_model_settings(NashMDConfig(dtype="float16")).dtype == "float16"


# ----------------------------------------------------------------------------- gradient checkpointing


def dpo_loss(model, seed=1):
    """DPO loss of 2 pairs (4 rows of 48 tokens, completions of unequal lengths) under ``model``."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 259, (4, 48), generator=g)  # (2B, T): firsts, then seconds
    attn = torch.ones_like(ids)
    attn[1, 40:] = 0  # a right-padded row
    comp = torch.zeros_like(ids)
    comp[:, 16:] = 1
    comp = comp * attn  # (2B, T) completion tokens
    seq, _ = sequence_logps(model, ids, attn, comp, "sum")  # (2B,)
    ref = seq.detach() - 0.3  # (2B,) a fixed reference, not equal to the policy
    return get_loss("dpo")(seq[:2], seq[2:], ref[:2], ref[2:], tau=0.5).loss.sum()


def grads_and_saved_bytes(model):
    """(gradients of the DPO loss, bytes of non-parameter tensors saved for backward, each storage once)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    model.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = dpo_loss(model)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return grads, sum(saved.values())


def max_diff(a, b):
    assert a.keys() == b.keys() and a
    return max(float((a[n] - b[n]).abs().max()) for n in a)


def test_gradient_checkpointing_same_gradients_less_saved_memory():
    """Full fine-tuning: the same gradients to 1e-6, at most 1/4 of the activation bytes saved for backward."""
    tok = tiny_tokenizer()
    plain = tiny_causal_lm(tokenizer=tok, seed=0, num_layers=4).train()
    ckpt = enable_gradient_checkpointing(tiny_causal_lm(tokenizer=tok, seed=0, num_layers=4).train())
    g_plain, bytes_plain = grads_and_saved_bytes(plain)
    g_ckpt, bytes_ckpt = grads_and_saved_bytes(ckpt)
    assert max_diff(g_plain, g_ckpt) < 1e-6
    assert bytes_ckpt < bytes_plain / 4, (bytes_plain, bytes_ckpt)  # measured: 4,062,300 -> 547,932 (7.4x)
    # negative controls: a 1e-3 change of one weight moves the gradients far beyond the tolerance,
    # and the counter sees the plain model's activations (it is not blind to them)
    with torch.no_grad():
        plain.model.layers[0].mlp.up_proj.weight[0, 0] += 1e-3
    assert max_diff(grads_and_saved_bytes(plain)[0], g_ckpt) > 1e-5
    assert bytes_plain > 1_000_000  # more than 5 fp32 (B, T, hidden) tensors a layer: it sees activations


def test_gradient_checkpointing_with_lora_same_adapter_gradients():
    """LoRA: the adapters' gradients agree to 1e-6 with checkpointing on (inputs made to require grad)."""
    tok = tiny_tokenizer()
    lora = LoraSettings(r=4, target_modules=("q_proj", "v_proj", "up_proj"))
    plain = apply_lora(tiny_causal_lm(tokenizer=tok, seed=0, num_layers=4), lora, "CAUSAL_LM").train()
    ckpt = apply_lora(tiny_causal_lm(tokenizer=tok, seed=0, num_layers=4), lora, "CAUSAL_LM").train()
    with torch.no_grad():  # B != 0, so that A gets a gradient too; then the same adapters in both
        for name, p in plain.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(p.numel()))
    ckpt.load_state_dict(plain.state_dict())
    enable_gradient_checkpointing(ckpt)
    g_plain, bytes_plain = grads_and_saved_bytes(plain)
    g_ckpt, bytes_ckpt = grads_and_saved_bytes(ckpt)
    assert all("lora_" in n for n in g_ckpt) and len(g_ckpt) == 4 * 3 * 2
    assert max_diff(g_plain, g_ckpt) < 1e-6
    assert bytes_ckpt < bytes_plain / 2, (bytes_plain, bytes_ckpt)


def test_checkpointed_models_do_not_share_prompts_and_tabular_is_refused():
    """Checkpointed layers drop the KV cache under gradients: prompt sharing is turned off for them."""
    tok = tiny_tokenizer()
    model = tiny_causal_lm(tokenizer=tok, seed=0)
    assert can_share_prompt(model)
    enable_gradient_checkpointing(model)
    assert not can_share_prompt(model)
    from nlhf.models.tabular import TabularLM

    with pytest.raises(ConfigError, match=r"^gradient_checkpointing: TabularLM does not support"):
        enable_gradient_checkpointing(TabularLM.from_logits(torch.zeros(2, 3)))


@pytest.mark.parametrize("kind", ["pm", "rm"])
def test_fit_backbone_with_gradient_checkpointing_same_gradients(kind, tmp_path):
    """train-pm / train-rm: the training step's gradients agree to 1e-6 with the backbone checkpointed (and its
    shared-prefix scoring turned off), with fewer bytes saved for backward."""
    from nlhf.train import fit

    backbone = tmp_path / "backbone"
    lm, tok = load_model("tiny")
    lm.model.save_pretrained(backbone)
    tok.save_pretrained(backbone)
    examples = [PreferenceExample(f"q{i}?", "yes " * (i + 1), "no") for i in range(3)]
    result = {}
    for flag in (False, True):
        cfg = fit.FitConfig(model=str(backbone), gradient_checkpointing=flag)
        torch.manual_seed(0)  # the same head
        model = fit._build_model(kind, cfg)
        assert getattr(model, "share_prompt", False) is (kind == "pm" and not flag)
        model.share_prompt = False  # both runs on the one-forward layout: only checkpointing differs
        batch = fit.make_collate(kind, model)(examples)
        params = {q.untyped_storage().data_ptr() for q in model.parameters()}
        saved: dict[int, int] = {}

        def pack(t, saved=saved, params=params):
            if t.untyped_storage().data_ptr() not in params:
                saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = fit.make_step(kind)(model, batch, None).losses.sum()
        loss.backward()
        grads = {n: q.grad.clone() for n, q in model.named_parameters() if q.grad is not None}
        result[flag] = (grads, sum(saved.values()))
    assert max_diff(result[False][0], result[True][0]) < 1e-6
    assert result[True][1] < result[False][1], (result[False][1], result[True][1])


PAIRS = [PreferenceExample(f"question {i}?", f"good answer {i}" * (i % 3 + 1), f"bad {i}") for i in range(6)]


def offline_cfg(tmp_path, name, **kw):
    loop = LoopConfig(micro_batch_size=2, max_steps=2, log_every=1, progress=False, tensorboard=False,
                      min_free_disk_mb=1, eval_at_end=False)  # fmt: skip
    return OfflineConfig(loss="dpo", model="tiny", out=str(tmp_path / name), optim=OptimConfig(lr=1e-2),
                         loop=loop, **kw)  # fmt: skip


def sgd(model):
    """Plain SGD: AdamW's first update, lr * g / |g|, would turn rounding noise in near-zero gradients into lr."""
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)


def trained(result):
    return {n: p.detach().clone() for n, p in result.policy.named_parameters() if p.requires_grad}


def moved(result) -> float:
    """The largest change of a parameter from the initial tiny model (the runs must train something)."""
    initial = dict(load_model("tiny")[0].named_parameters())
    return max(float((p - initial[n]).abs().max()) for n, p in trained(result).items())


def test_dpo_run_with_gradient_checkpointing_matches_and_records_resolved_dtype(tmp_path):
    """Two DPO steps with gradient_checkpointing=true: the same parameters (to 1e-5) as without it;
    config.yaml records dtype float32 (auto resolved on the CPU) and the flag."""
    plain = run_offline(offline_cfg(tmp_path, "plain"), train_examples=PAIRS, optimizer_fn=sgd)
    ckpt = run_offline(offline_cfg(tmp_path, "ckpt", gradient_checkpointing=True), train_examples=PAIRS,
                       optimizer_fn=sgd)  # fmt: skip
    assert ckpt.policy.model.layers[0].gradient_checkpointing
    assert max_diff(trained(plain), trained(ckpt)) < 1e-5
    assert moved(ckpt) > 1e-3
    saved = yaml.safe_load((tmp_path / "ckpt" / "config.yaml").read_text())
    assert saved["dtype"] == "float32" and saved["gradient_checkpointing"] is True
    assert saved["attn_implementation"] == "sdpa"


def test_nash_md_with_gradient_checkpointing_matches(tmp_path):
    """Nash-MD-PG, K = 2 responses a prompt (the grouped, prompt-sharing log-probs when not checkpointed):
    the same parameters after 2 steps with and without checkpointing."""
    from nlhf.judges import CallableJudge
    from nlhf.sampling import SamplingConfig
    from nlhf.train.nash_md import run_nash_md

    def run(name, **kw):
        loop = LoopConfig(micro_batch_size=2, max_steps=2, log_every=1, progress=False, tensorboard=False,
                          min_free_disk_mb=1, eval_at_end=False)  # fmt: skip
        cfg = NashMDConfig(model="tiny", out=str(tmp_path / name), responses_per_prompt=2,
                           sampling=SamplingConfig(max_new_tokens=6), optim=OptimConfig(lr=1e-2), loop=loop, **kw)  # fmt: skip
        judge = CallableJudge(lambda p, a, b: float(len(a) < len(b)), name="shorter")
        return run_nash_md(
            cfg, judge=judge, train_prompts=["Hi", "Say yes", "Why", "Count"], optimizer_fn=sgd
        )

    plain, ckpt = run("plain"), run("ckpt", gradient_checkpointing=True)
    assert ckpt.policy.model.layers[0].gradient_checkpointing
    assert max_diff(trained(plain), trained(ckpt)) < 1e-5
    assert moved(ckpt) > 1e-3


@pytest.mark.parametrize("trainer", ["sppo", "inpo", "online_ipo", "ppo"])
def test_other_online_trainers_with_gradient_checkpointing_match(trainer, tmp_path):
    """SPPO / INPO (pi_t snapshot), online IPO and PPO: 2 SGD steps give the same parameters (to 1e-6) with and
    without gradient checkpointing on the policy."""
    from nlhf.judges import CallableJudge
    from nlhf.sampling import SamplingConfig
    from nlhf.train import inpo, online_ipo, rlhf, sppo

    judge = CallableJudge(lambda p, a, b: float(len(a) < len(b)), name="shorter")
    runs = {"sppo": (sppo.SPPOConfig, sppo.run_sppo, {}), "inpo": (inpo.INPOConfig, inpo.run_inpo, {}),
            "online_ipo": (online_ipo.OnlineIPOConfig, online_ipo.run_online_ipo, {}),
            "ppo": (rlhf.RLHFConfig, rlhf.run_rlhf, {"algorithm": "ppo", "group_size": 2, "ppo_epochs": 2})}  # fmt: skip
    config_class, run, extra = runs[trainer]
    scorer = (
        {"reward_fn": lambda p, rs: torch.tensor([-len(r) / 8.0 for r in rs])}
        if trainer == "ppo"
        else {"judge": judge}
    )
    results = []
    for flag in (False, True):
        loop = LoopConfig(micro_batch_size=2, max_steps=2, log_every=1, progress=False, tensorboard=False,
                          min_free_disk_mb=1, eval_at_end=False)  # fmt: skip
        cfg = config_class(model="tiny", out=str(tmp_path / str(flag)), sampling=SamplingConfig(max_new_tokens=6),
                           gradient_checkpointing=flag, loop=loop, **extra)  # fmt: skip
        results.append(run(cfg, train_prompts=["Hi", "Say yes", "Why", "Count"], optimizer_fn=sgd, **scorer))
    assert results[1].policy.model.layers[0].gradient_checkpointing
    assert max_diff(trained(results[0]), trained(results[1])) < 1e-6
    assert moved(results[1]) > 1e-4


# ----------------------------------------------------------------------------- attention kernel


def test_eager_and_sdpa_attention_give_the_same_log_probs(tmp_path):
    """tiny (built) and a saved directory (from_pretrained): the kernel asked for is the one used, same log-probs."""
    ids = torch.randint(3, 259, (3, 20), generator=torch.Generator().manual_seed(0))  # (B, T)
    attn = torch.ones_like(ids)
    attn[0, 14:] = 0
    comp = torch.zeros_like(ids)
    comp[:, 8:] = 1
    comp = comp * attn
    out = {}
    for kernel in ("eager", "sdpa"):
        model, _ = load_model("tiny", attn_implementation=kernel)
        assert model.config._attn_implementation == kernel
        with torch.no_grad():
            out[kernel] = sequence_logps(model.eval(), ids, attn, comp, "sum")[0]  # (B,)
    assert torch.allclose(out["eager"], out["sdpa"], atol=1e-5, rtol=0)
    for cfg in (
        NashMDConfig(model="tiny", attn_implementation="eager"),
        offline_cfg(tmp_path, "x", attn_implementation="eager"),
    ):
        assert (
            load_policy_model(cfg)[0].config._attn_implementation == "eager"
        )  # the trainers' loader passes it
    model, tok = load_model("tiny")
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    for kernel in ("eager", "sdpa"):
        loaded, _ = load_causal_lm(tmp_path / "m", attn_implementation=kernel)
        assert loaded.config._attn_implementation == kernel
        with torch.no_grad():
            assert torch.allclose(
                sequence_logps(loaded, ids, attn, comp, "sum")[0], out["eager"], atol=1e-5, rtol=0
            )


def test_flash_attention_2_and_qlora_are_refused_off_cuda(monkeypatch):
    """One-line errors naming the key: flash_attention_2 and lora.quantize need CUDA, then their package."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"^attn_implementation: flash_attention_2 needs a CUDA GPU"):
        check_attn_implementation("flash_attention_2")
    with pytest.raises(ConfigError, match=r"^lora.quantize: 4bit \(QLoRA, bitsandbytes\) needs a CUDA GPU"):
        check_quantize("4bit")
    check_attn_implementation("eager")
    check_quantize(None)
    fake_cuda(monkeypatch)  # a GPU, but neither package is installed here
    with pytest.raises(ConfigError, match=r"^attn_implementation: .*needs the flash_attn package"):
        check_attn_implementation("flash_attention_2")
    with pytest.raises(ConfigError, match=r"^lora.quantize: 8bit needs the bitsandbytes package"):
        check_quantize("8bit")
    with pytest.raises(ConfigError, match=r"^lora.quantize: .*bitsandbytes"):
        resolve_model_settings(NashMDConfig(lora=LoraSettings(quantize="4bit")))
    with pytest.raises(ConfigError, match=r"^lora.quantize: must be one of"):
        LoraSettings(quantize="3bit")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["train", "dpo", "attn_implementation=flash_attention_2"],
            "attn_implementation: flash_attention_2 needs",
        ),
        (
            ["train", "nash-md", "--prompts", "p.jsonl", "--judge", "j", "lora.quantize=4bit"],
            "lora.quantize: 4bit",
        ),
        (["train", "dpo", "lora.quantize=4bit", "reference=tiny:3"], "lora.quantize: 4bit"),
        (["train-pm", "lora.quantize=4bit"], "lora.quantize: train-pm / train-rm do not quantise"),
    ],
)
def test_the_commands_refuse_in_one_line_before_loading(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    data = ["--data", "d.jsonl"] if argv[0] == "train-pm" or argv[1] == "dpo" else []
    rc = main([*argv, *data, "--model", "tiny", "--out", str(tmp_path / "out")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_the_knobs_are_in_help(capsys):
    for argv, keys in (
        (["train", "dpo", "--help"], ("dtype=auto", "attn_implementation=", "gradient_checkpointing=", "lora.quantize=", "reference=")),
        (["train", "nash-md", "--help"], ("dtype=auto", "attn_implementation=", "gradient_checkpointing=", "lora.quantize=")),
        (["train-rm", "--help"], ("dtype=auto", "gradient_checkpointing=")),
    ):  # fmt: skip
        with pytest.raises(SystemExit):
            main(argv)
        text = capsys.readouterr().out
        assert all(k in text for k in keys), (argv, text)


# ----------------------------------------------------------------------------- offline reference


def seq_logprob(model, prompt_ids, response_ids):
    """log mu(response | prompt) summed over the response tokens: one plain forward, independent of nlhf."""
    ids = torch.tensor([prompt_ids + response_ids])  # (1, T)
    with torch.no_grad():
        logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)  # (T-1, V)
    targets = ids[0, 1:]
    return float(logps.gather(-1, targets[:, None])[len(prompt_ids) - 1 :].sum())


def cached(out):
    return torch.load(out / ref_cache.REF_CACHE, weights_only=True)["train"]  # (N, 2)


def test_dpo_reference_model_gives_the_cached_log_probs(tmp_path):
    """reference=tiny:7: ref_logps.pt holds tiny:7's log-probs of every pair (first, second); the default run's
    cache holds the initial policy's (tiny:0), and the two differ."""
    one_epoch = {"max_steps": None, "epochs": 1.0}
    cfg = offline_cfg(tmp_path, "ref7", reference="tiny:7")
    cfg = dataclasses.replace(cfg, loop=dataclasses.replace(cfg.loop, **one_epoch))
    default = dataclasses.replace(cfg, reference=None, out=str(tmp_path / "default"))
    run_offline(cfg, train_examples=PAIRS)
    run_offline(default, train_examples=PAIRS)
    tok = tiny_tokenizer()
    models = {7: load_model("tiny:7")[0].eval(), 0: load_model("tiny:0")[0].eval()}
    pairs = [tokenize_pair(tok, e) for e in PAIRS]
    for seed, out in ((7, tmp_path / "ref7"), (0, tmp_path / "default")):
        want = torch.tensor(
            [[seq_logprob(models[seed], p.prompt_ids, p.first_ids), seq_logprob(models[seed], p.prompt_ids, p.second_ids)]
             for p in pairs]
        )  # fmt: skip
        assert torch.allclose(cached(out), want, atol=1e-4, rtol=0), seed
    assert float((cached(tmp_path / "ref7") - cached(tmp_path / "default")).abs().min()) > 1e-3
    summary = json.loads((tmp_path / "ref7" / "metrics.json").read_text())
    assert summary["ref_pairs_computed"] == len(PAIRS)


def test_dpo_reference_with_another_tokenizer_or_path_is_refused(tmp_path):
    model, tok = load_model("tiny:3")
    tok.add_tokens(["<extra>"])
    model.save_pretrained(tmp_path / "other")
    tok.save_pretrained(tmp_path / "other")
    cfg = offline_cfg(tmp_path, "bad", reference=str(tmp_path / "other"))
    with pytest.raises(
        ConfigError, match=r"^reference: the tokenizer of .* is not the policy's \(260 vs 259 tokens"
    ):
        run_offline(cfg, train_examples=PAIRS)
    cfg = offline_cfg(tmp_path, "missing", reference=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"^reference: model path not found"):
        run_offline(cfg, train_examples=PAIRS)
