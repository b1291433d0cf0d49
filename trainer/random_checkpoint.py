"""A random-weight checkpoint of a real model's shape, for timing training where no hub is reachable.

    python -m trainer.random_checkpoint --like DIR --shape smollm2-1.7b --out DIR [--seed 0]

Speed and memory of a training step depend on the architecture, the dtype and the token counts, not
on the weights' values. So a benchmark of a larger model needs only its shape and its tokenizer:
this takes the tokenizer, config and generation config of `--like` (any Llama-family checkpoint
directory, such as the converted SmolLM2-135M), applies the named shape and saves seeded random
weights in bf16, the dtype the SmolLM2 checkpoints are published in. The shapes are those of the published
SmolLM2 configs, which share the 49,152-token tokenizer.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from trainer.errors import BaseModelError

# Fields of each published SmolLM2 config.json that differ from SmolLM2-135M's.
SHAPES: dict[str, dict[str, int | float]] = {
    "same": {},
    "smollm2-360m": {"hidden_size": 960, "intermediate_size": 2560, "num_hidden_layers": 32,
                     "num_attention_heads": 15, "num_key_value_heads": 5, "head_dim": 64},
    "smollm2-1.7b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 24,
                     "num_attention_heads": 32, "num_key_value_heads": 32, "head_dim": 64, "rope_theta": 130000.0},
}


def build_random_checkpoint(like: Path, shape: str, out: Path, seed: int = 0, dtype: str = "bfloat16") -> int:
    """Write the checkpoint to `out`; returns its parameter count."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    if shape not in SHAPES:
        raise BaseModelError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")
    if not (like / "config.json").is_file():
        raise BaseModelError(f"--like {like} has no config.json; point it at a Hugging Face checkpoint directory")
    config = AutoConfig.from_pretrained(like)
    for key, value in SHAPES[shape].items():
        if key == "rope_theta" and getattr(config, "rope_parameters", None):
            config.rope_parameters["rope_theta"] = value
        else:
            setattr(config, key, value)
    torch.manual_seed(seed)
    # Initialise on the GPU when there is one: a 1.7B init on CPU takes minutes.
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    if (like / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(like)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    # transformers writes whichever files this tokenizer type needs (tokenizer.json, vocab/merges, chat template).
    AutoTokenizer.from_pretrained(like).save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    (out / "prefloop-model.json").write_text(json.dumps(
        {"kind": "random-weights", "shape": shape, "like": str(like), "seed": seed, "dtype": dtype, "parameters": params},
        indent=2) + "\n")
    return params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.random_checkpoint", description=__doc__.split("\n\n")[0])
    parser.add_argument("--like", type=Path, required=True, help="checkpoint whose tokenizer and config to start from")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="same", help="published shape to apply (default same)")
    parser.add_argument("--out", type=Path, required=True, help="directory to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        params = build_random_checkpoint(args.like, args.shape, args.out, args.seed)
    except BaseModelError as exc:
        print(f"random_checkpoint: {exc}", file=sys.stderr)
        return 2
    print(f"{args.out}: {args.shape} shape, {params / 1e6:.1f}M parameters, random weights (seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
