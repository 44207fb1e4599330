"""A toy "token-level" regression task for testing the training loop without a language model.

Each example is a short sequence of T_i token feature vectors (T_i varies: unequal weights)
with a target per token. The per-example loss is the SUM over its tokens of the squared
error, and its weight is T_i, so the correctly normalised loss of a batch is the token mean.
Used in-process by the loop tests and as a subprocess by ``train_resume_script.py``.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn

from nlhf.train.loop import StepOutput

DIM = 4


def make_data(n: int, seed: int = 0, max_len: int = 7) -> list[dict[str, torch.Tensor]]:
    """``n`` examples with lengths 1..max_len: ``{"x": (T, DIM), "y": (T,)}``."""
    g = torch.Generator().manual_seed(seed)
    w_true = torch.randn(DIM, generator=g)
    data = []
    for i in range(n):
        length = 1 + (i * 5 + 3) % max_len  # deterministic, unequal lengths
        x = torch.randn(length, DIM, generator=g)
        y = x @ w_true + 0.1 * torch.randn(length, generator=g)
        data.append({"x": x, "y": y})
    return data


def collate(examples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Right-pad to ``(B, T_max, DIM)``; the mask comes from the lengths."""
    lengths = torch.tensor([len(e["y"]) for e in examples])  # (B,)
    t_max = int(lengths.max())
    x = torch.zeros(len(examples), t_max, DIM)  # (B, T, DIM)
    y = torch.zeros(len(examples), t_max)  # (B, T)
    for i, e in enumerate(examples):
        x[i, : len(e["y"])] = e["x"]
        y[i, : len(e["y"])] = e["y"]
    mask = torch.arange(t_max)[None, :] < lengths[:, None]  # (B, T)
    return {"x": x, "y": y, "mask": mask}


class ToyModel(nn.Module):
    def __init__(self, dropout: float = 0.0, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.hidden = nn.Linear(DIM, 8)
            self.out = nn.Linear(8, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(torch.tanh(self.hidden(x)))).squeeze(-1)  # (B, T)


def token_sq_error_step(model: nn.Module, batch: dict[str, torch.Tensor], ctx) -> StepOutput:
    """Per-example summed squared error and token counts."""
    pred = model(batch["x"])  # (B, T)
    mask = batch["mask"].float()  # (B, T)
    per_token = (pred - batch["y"]) ** 2 * mask  # (B, T)
    losses = per_token.sum(-1)  # (B,)
    weights = mask.sum(-1)  # (B,)
    abs_err = ((pred - batch["y"]).abs() * mask).sum(-1)  # (B,)
    return StepOutput(losses=losses, weights=weights, metrics={"abs_err": (abs_err, weights)})


class NoisyStep:
    """The toy step plus every kind of randomness a resume must restore.

    Dropout (torch RNG), target noise from numpy's global RNG and python's ``random``, and a
    stateful EMA of the parameters (like Nash-EMA's opponent) pulling the model towards it.
    """

    def __init__(self, model: nn.Module, ema_decay: float = 0.8, pull: float = 0.1) -> None:
        self.ema = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.decay, self.pull = ema_decay, pull
        self.calls = 0

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor], ctx) -> StepOutput:
        self.calls += 1
        inner = getattr(model, "module", model)
        if ctx.micro_step == 0:  # update the EMA opponent once per optimiser step
            for n, p in inner.named_parameters():
                self.ema[n] = self.ema[n].to(p.device)  # (a restored state arrives on the CPU)
                self.ema[n].mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)
        noise = torch.from_numpy(np.random.normal(0.0, 0.05, size=batch["y"].shape)).float()  # (B, T)
        noise = noise.to(batch["y"].device)
        jitter = random.uniform(-0.05, 0.05)
        batch = dict(batch, y=batch["y"] + noise + jitter)
        out = token_sq_error_step(model, batch, ctx)
        anchor = sum(((p - self.ema[n].to(p.device)) ** 2).sum() for n, p in inner.named_parameters())  # ()
        out.losses = out.losses + self.pull * anchor * out.weights / out.weights.sum()  # (B,)
        return out

    def state_dict(self) -> dict:
        return {"ema": {n: t.clone() for n, t in self.ema.items()}, "calls": self.calls}

    def load_state_dict(self, state: dict) -> None:
        self.ema = {n: t.clone() for n, t in state["ema"].items()}
        self.calls = state["calls"]
