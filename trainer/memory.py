"""How much memory a DPO LoRA step needs, and how many layers to checkpoint so it fits.

Gradient checkpointing saves only each decoder layer's input and recomputes the rest in the
backward pass: a fraction of the activation memory for ~20-30% more time. TRL turns it on for every
model; prefloop's default (`gradient_checkpointing = "auto"`) checkpoints the *fewest* layers that
keep the estimated peak within `memory_budget_fraction` of the device's free memory: none when the
model fits easily (the common case for small models), all but the last when even that is tight (the
last layer is recomputed as soon as the backward pass starts, so checkpointing it saves nothing). The
choice and its figures are logged and written to the run's metrics.

The estimate is deliberately generous (it counts every tensor a Llama-style layer saves for the
backward pass at the longest padded length of any batch), so a run it lets through fits. Measured on
an H100 with the SmolLM2-135M and -1.7B shapes (16 pairs per step, ~250 tokens), the activation term
over-estimates the measured difference between checkpointing off and on by 35-60%.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

GIB = 2**30


@dataclass(frozen=True)
class ModelShape:
    """The dimensions of a decoder-only transformer that decide its training memory."""

    layers: int
    hidden: int
    intermediate: int
    kv_dim: int  # key (= value) width: kv heads × head dim
    parameters: int

    @classmethod
    def from_config(cls, config: Any, parameters: int | None = None) -> "ModelShape":
        hidden = int(config.hidden_size)
        heads = int(getattr(config, "num_attention_heads", 1) or 1)
        kv_heads = int(getattr(config, "num_key_value_heads", heads) or heads)
        head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
        intermediate = int(getattr(config, "intermediate_size", 4 * hidden))
        layers = int(config.num_hidden_layers)
        if parameters is None:  # embeddings (tied or not) + per-layer attention and MLP weights
            vocab = int(getattr(config, "vocab_size", 0))
            per_layer = hidden * (hidden + 2 * kv_heads * head_dim + hidden) + 3 * hidden * intermediate
            parameters = vocab * hidden * (1 if getattr(config, "tie_word_embeddings", False) else 2) + layers * per_layer
        return cls(layers=layers, hidden=hidden, intermediate=intermediate, kv_dim=kv_heads * head_dim, parameters=parameters)


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    trainable_state: int  # LoRA weights, gradients and AdamW's two moments, fp32
    activations: int  # saved for backward, at the chosen number of checkpointed layers
    checkpointed_layers: int

    @property
    def total(self) -> int:
        return self.weights + self.trainable_state + self.activations


def layer_activation_bytes(shape: ModelShape, tokens: int, dtype_bytes: int) -> int:
    """Bytes one decoder layer saves for backward without checkpointing: its input and two norms'
    outputs (3h), q/k/v (h + 2 kv), attention output and o_proj input (2h), the residual sum (h),
    the MLP's gate, up, activation and product (4 × intermediate), rounded up to 10h + 2kv + 4i."""
    return tokens * (10 * shape.hidden + 2 * shape.kv_dim + 4 * shape.intermediate) * dtype_bytes


def estimate(shape: ModelShape, *, tokens: int, dtype_bytes: int, lora_parameters: int, checkpointed_layers: int) -> MemoryEstimate:
    """Peak training memory with `checkpointed_layers` of `shape.layers` checkpointed. `tokens` is the
    largest batch's token count (sequences × padded length)."""
    k = max(0, min(shape.layers, checkpointed_layers))
    full = layer_activation_bytes(shape, tokens, dtype_bytes)
    saved_input = tokens * shape.hidden * dtype_bytes
    # A checkpointed layer keeps only its input. The checkpointed layers are the first ones, and the
    # backward pass runs last layer first, so when one is recomputed (its full activations exist again)
    # every non-checkpointed layer has been freed: the peak is at the start of the backward pass, or,
    # with every layer checkpointed, during one recompute.
    activations = k * saved_input + max(shape.layers - k, 1 if k else 0) * full
    return MemoryEstimate(
        weights=shape.parameters * dtype_bytes,
        trainable_state=lora_parameters * 4 * 4,
        activations=activations,
        checkpointed_layers=k,
    )


def lora_parameter_count(shape: ModelShape, rank: int, target_modules: list[str]) -> int:
    """LoRA A and B matrices over the targeted projections of every layer."""
    h, kv, i = shape.hidden, shape.kv_dim, shape.intermediate
    dims = {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
            "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
    per_layer = sum(rank * (dims[m][0] + dims[m][1]) for m in target_modules if m in dims)
    return shape.layers * per_layer


@dataclass(frozen=True)
class CheckpointingChoice:
    checkpointed_layers: int
    layers: int
    reason: str
    estimate_without: MemoryEstimate
    estimate_chosen: MemoryEstimate
    budget_bytes: int | None

    @property
    def enabled(self) -> bool:
        return self.checkpointed_layers > 0


def choose_checkpointing(
    setting: str, shape: ModelShape, *, tokens: int, dtype_bytes: int, lora_parameters: int,
    free_bytes: int | None, budget_fraction: float,
) -> CheckpointingChoice:
    """`on`: every layer; `off`: none; `auto`: the fewest layers whose estimate fits the budget
    (`budget_fraction` × free memory). Unknown free memory under `auto` means every layer (safe)."""
    def at(k: int) -> MemoryEstimate:
        return estimate(shape, tokens=tokens, dtype_bytes=dtype_bytes, lora_parameters=lora_parameters, checkpointed_layers=k)

    without = at(0)
    n = shape.layers
    if setting in ("on", "off"):
        k = n if setting == "on" else 0
        return CheckpointingChoice(k, n, f"gradient_checkpointing={setting}", without, at(k), None)
    if free_bytes is None:
        return CheckpointingChoice(n, n, "auto: free memory unknown, checkpointing every layer", without, at(n), None)
    budget = int(free_bytes * budget_fraction)
    if without.total <= budget:
        return CheckpointingChoice(0, n, f"auto: fits without ({without.total / GIB:.2f} GiB estimated, budget {budget / GIB:.2f} GiB)",
                                   without, without, budget)
    # Each checkpointed layer saves (full - saved input) bytes: find the fewest that fit.
    per_layer_saving = layer_activation_bytes(shape, tokens, dtype_bytes) - tokens * shape.hidden * dtype_bytes
    # Checkpointing the last layer too saves nothing: it is recomputed as soon as the backward pass starts.
    k = min(max(1, n - 1), math.ceil((without.total - budget) / max(1, per_layer_saving)))
    chosen = at(k)
    if chosen.total > budget:
        reason = (f"auto: {k} of {n} layers checkpointed (the most that helps) and still {chosen.total / GIB:.2f} GiB estimated over a budget of "
                  f"{budget / GIB:.2f} GiB; lower batch_size or max_length if it runs out of memory")
    else:
        reason = (f"auto: {k} of {n} layers checkpointed ({without.total / GIB:.2f} GiB estimated without, "
                  f"{chosen.total / GIB:.2f} GiB with; budget {budget / GIB:.2f} GiB)")
    return CheckpointingChoice(k, n, reason, without, chosen, budget)


def free_memory_bytes(device: str) -> int | None:
    """Free memory of the training device now: CUDA's free bytes, or the host's available RAM on CPU."""
    if device == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info()
        return int(free)
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - an unknown figure makes `auto` choose the safe side
        return None


def checkpoint_layers(model: Any, count: int) -> int:
    """After the trainer enabled gradient checkpointing on every decoder layer, keep it on the first
    `count` only (transformers' `GradientCheckpointingLayer.gradient_checkpointing` flag, per layer).
    Returns how many layers are checkpointed."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    for index, layer in enumerate(layers):
        layer.gradient_checkpointing = layer.gradient_checkpointing and index < count
    return sum(1 for layer in layers if layer.gradient_checkpointing)
