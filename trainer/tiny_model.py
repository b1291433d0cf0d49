"""`--base-model tiny`: a deterministic tiny Llama built on this machine, no hub needed.

A byte-level BPE tokenizer is trained with `tokenizers` on a small built-in corpus, and a Llama
with seeded random weights is saved as an ordinary Hugging Face checkpoint directory (config.json,
model.safetensors, tokenizer files) that `AutoModelForCausalLM` / `AutoTokenizer` load. It is
cached under `<cache_dir>/models/tiny-llama-<hash of its spec>`; building twice gives identical
weights, so tests that share the cache share the model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from trainer.fsutil import file_lock

# Bump when the build procedure changes in a way the spec does not capture.
BUILDER_VERSION = 1

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"

_SUBJECTS = ("the model", "a user", "the answer", "this reply", "my friend", "the assistant", "our team", "the system")
_VERBS = ("explains", "writes", "helps with", "checks", "answers", "fixes", "describes", "summarises")
_OBJECTS = (
    "the question", "a short poem", "the weather today", "your order", "the code", "a recipe for soup",
    "the train times", "a polite email", "the meeting notes", "the budget",
)
_PHRASES = (
    "please", "thank you", "thanks a lot", "you are welcome", "sure, happy to help", "no", "whatever",
    "figure it out yourself", "I do not care", "of course", "here is", "sorry", "hello", "goodbye",
    "question:", "answer:", "what is", "how do I", "why does", "can you",
)


def builtin_corpus() -> list[str]:
    """A few hundred short English lines; enough for a small BPE vocabulary."""
    lines = []
    for i, subject in enumerate(_SUBJECTS):
        for j, verb in enumerate(_VERBS):
            obj = _OBJECTS[(i + j) % len(_OBJECTS)]
            phrase = _PHRASES[(i * 3 + j) % len(_PHRASES)]
            lines.append(f"{subject.capitalize()} {verb} {obj}, {phrase}.")
            lines.append(f"Question: {_PHRASES[(i + j) % len(_PHRASES)]} {obj}? Answer: {phrase}, {subject} {verb} it.")
    lines.extend(_PHRASES)
    lines.append("abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,;:!?'\"()-")
    return lines


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape of the tiny Llama; its hash names the cache directory."""

    vocab_size: int = 512
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    max_position_embeddings: int = 512
    seed: int = 1234

    def digest(self) -> str:
        corpus = hashlib.sha256("\n".join(builtin_corpus()).encode()).hexdigest()
        blob = json.dumps({"spec": dataclasses.asdict(self), "corpus": corpus, "builder": BUILDER_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def tiny_model_dir(cache_dir: Path, spec: TinyModelSpec = TinyModelSpec()) -> Path:
    return Path(cache_dir) / "models" / f"tiny-llama-{spec.digest()}"


def ensure_tiny_model(cache_dir: Path, spec: TinyModelSpec = TinyModelSpec()) -> Path:
    """Directory of the tiny checkpoint, building it first if the cache does not have it."""
    target = tiny_model_dir(cache_dir, spec)
    if (target / "config.json").is_file():
        return target
    with file_lock(target.parent / f".{target.name}.lock"):
        if (target / "config.json").is_file():
            return target
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
        try:
            build_tiny_model(tmp, spec)
            tmp.rename(target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def build_tiny_model(out_dir: Path, spec: TinyModelSpec = TinyModelSpec()) -> None:
    """Train the tokenizer, initialise seeded weights and save both to `out_dir`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(builtin_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN)

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_attention_heads,
        max_position_embeddings=spec.max_position_embeddings,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(spec.seed)
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(generator_state)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "prefloop-model.json").write_text(
        json.dumps({"kind": "tiny-llama", "spec": dataclasses.asdict(spec), "builder": BUILDER_VERSION}, indent=2) + "\n"
    )
