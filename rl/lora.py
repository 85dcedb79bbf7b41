"""Low-rank adapters (LoRA, Hu et al. 2021) for the learner: W x + (alpha / r) B A x on every
linear layer of the decoder blocks, with W frozen and only A (r × in) and B (out × r) trained.

What it changes in the learner (`learner.lora_rank` > 0):
- gradients and AdamW state exist for the adapters only (and the critic's head);
- the reference is the same model with its adapters switched off (`adapters_disabled`): no second
  copy of the weights is loaded;
- what leaves the learner (the push to the rollout workers, the saved model, checksums) is the
  merged weights under the base model's own names (`merged_state_dict`), so vLLM and
  `from_pretrained` see a plain model.

B starts at zero, so the adapted model is exactly the base model before the first update.
"""
from __future__ import annotations

import contextlib
import math

import torch


class LoRALinear(torch.nn.Module):
    """A frozen linear layer plus a trainable low-rank update."""

    def __init__(self, base: torch.nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.scale = alpha / rank
        self.lora_a = torch.nn.Parameter(torch.empty(rank, base.in_features, dtype=base.weight.dtype, device=base.weight.device))
        self.lora_b = torch.nn.Parameter(torch.zeros(base.out_features, rank, dtype=base.weight.dtype, device=base.weight.device))
        torch.nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))   # as nn.Linear initialises its weight
        self.enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.enabled:
            out = out + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scale
        return out

    def merged_weight(self) -> torch.Tensor:
        return self.base.weight + self.scale * (self.lora_b @ self.lora_a)


def apply_lora(model: torch.nn.Module, rank: int, alpha: float) -> list[str]:
    """Freeze every parameter of `model` and wrap each nn.Linear inside its decoder layers (a
    module list named `layers`: attention and MLP projections; not the embeddings or the LM head)
    in a LoRALinear. Returns the wrapped modules' names."""
    if rank < 1:
        raise ValueError(f"LoRA rank must be at least 1, got {rank}")
    model.requires_grad_(False)
    wrapped = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, torch.nn.Linear) and ".layers." in f".{full}":
                setattr(module, child_name, LoRALinear(child, rank, alpha))
                wrapped.append(full)
    if not wrapped:
        raise ValueError(f"LoRA: {type(model).__name__} has no linear layer inside a module list named 'layers'")
    return wrapped


def has_lora(model: torch.nn.Module) -> bool:
    return any(isinstance(m, LoRALinear) for m in model.modules())


@contextlib.contextmanager
def adapters_disabled(model: torch.nn.Module):
    """The base model inside the block (the reference, for the KL)."""
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    for m in layers:
        m.enabled = False
    try:
        yield model
    finally:
        for m in layers:
            m.enabled = True


@torch.no_grad()
def merged_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict as the base model names it, each adapted weight merged (W + s·BA);
    tensors that share storage (a tied LM head) keep sharing it."""
    adapted = {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}
    out = {}
    for key, tensor in model.state_dict().items():
        owner, _, param = key.rpartition(".")
        if owner in adapted:                 # <layer>.lora_a / <layer>.lora_b: merged below
            continue
        layer, _, inner = owner.rpartition(".")
        if inner == "base" and layer in adapted:
            out[f"{layer}.{param}"] = adapted[layer].merged_weight() if param == "weight" else tensor
        else:
            out[key] = tensor
    return out
