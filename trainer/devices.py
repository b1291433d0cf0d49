"""Which torch device a run uses and in which precision: one rule for training, the gate and the gateway."""

from __future__ import annotations

import torch

from trainer.errors import TrainerError


class NoCudaError(TrainerError):
    """`cuda` was asked for, but torch sees no CUDA device."""


def resolve_device(requested: str, fix: str = "use --device cpu or auto") -> str:
    """`auto` is CUDA when torch sees a CUDA device, else the CPU; `cuda` without one raises, saying `fix`."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise NoCudaError(f"device cuda was requested but torch sees no CUDA device; {fix}")
    return requested


def use_bf16(device: str) -> bool:
    """bf16 only on a CUDA device that supports it; the CPU runs fp32 (TRL's bf16 default fails there)."""
    return device == "cuda" and torch.cuda.is_bf16_supported()
