"""Held-out scores of the candidate and the baseline, tokenized exactly as TRL trained the candidate.

For a pair and a model M, s_M = log π_M(chosen | prompt) − log π_M(rejected | prompt), each summed
over the completion tokens. The pairs go through the trainer's own path: `to_columns` (chat format
when the run used one), a `CachedReferenceDPOTrainer` built with the run's settings (TRL's
tokenization, truncation, collator and fused LM head), and `policy_logps`. The trainer wraps the base
model with LoRA; the candidate (and a baseline adapter) are loaded as named adapters next to it, so
one copy of the base weights serves every side, and "adapters disabled" is the base model.

When the baseline is the base model, s_B is the DPO reference margin, which the trainer has cached
by (pair_id, reference revision) for every pair it ever scored: the trainer's `__init__` reads those
from the cache and runs the reference forward only on the misses (storing them). Scoring batches
pairs of similar length, runs without gradients, on CUDA when there is one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evaluator.gate.errors import CandidateError
from schemas import PreferencePair
from trainer.settings import TrainerSettings

CANDIDATE = "candidate"
BASELINE = "baseline"
Progress = Callable[[int, int], None]  # (pairs done, pairs in all)


@dataclass(frozen=True)
class Side:
    """One model of the comparison: a registry version (or a directory) and its adapter; no adapter = the base."""

    name: str
    adapter_dir: Path | None


@dataclass(frozen=True)
class PairScores:
    pair_ids: list[str]
    candidate: np.ndarray  # s_C per pair, in `pair_ids` order
    baseline: np.ndarray  # s_B
    dropped: list[str]  # pairs TRL drops (the prompt alone fills max_length)
    ref_cache_hits: int  # baseline scores read from the trainer's reference cache
    ref_forward_pairs: int  # baseline scores the reference forward computed now
    seconds: float

    @property
    def diffs(self) -> np.ndarray:
        return self.candidate - self.baseline


def run_settings(adapter_dir: Path, fallback: TrainerSettings) -> TrainerSettings:
    """The TrainerSettings the candidate was trained with (its run.json), so tokenization matches; the
    given settings for an adapter trained elsewhere."""
    run_file = Path(adapter_dir) / "run.json"
    if not run_file.is_file():
        return fallback
    try:
        recorded = json.loads(run_file.read_text())["settings"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CandidateError(f"{run_file} is not a prefloop run record ({exc}); retrain or remove it") from None
    known = {f.name for f in dataclasses.fields(TrainerSettings)}
    return TrainerSettings(**{k: v for k, v in recorded.items() if k in known})


def check_adapter(side: Side) -> None:
    if side.adapter_dir is not None and not (side.adapter_dir / "adapter_config.json").is_file():
        raise CandidateError(f"adapter of {side.name} is missing: no adapter_config.json in {side.adapter_dir}; "
                             "retrain it or pass another version")


class GateModels:
    """The base model with the candidate (and a baseline adapter) loaded, inside a TRL DPO trainer whose
    dataset is the held-out set. Use as a context manager; `score()` then `generate()`."""

    def __init__(self, *, base_model_dir: Path, training: TrainerSettings, candidate: Side, baseline: Side,
                 pairs: list[PreferencePair], cache_dir: Path, device: str, batch_size: int, cpu_threads: int = 0) -> None:
        check_adapter(candidate)
        check_adapter(baseline)
        if candidate.adapter_dir is None:
            raise CandidateError(f"{candidate.name} is the base model itself; evaluate a trained version")
        self.candidate, self.baseline = candidate, baseline
        self.pairs = pairs
        self.base_model_dir = Path(base_model_dir)
        self.cache_dir = Path(cache_dir)
        self.batch_size = batch_size
        self.training = training.replace(device=device, ref_batch_size=batch_size, progress=False)
        self.cpu_threads = cpu_threads
        self._stack = contextlib.ExitStack()
        self.trainer: Any = None
        self.tokenizer: Any = None
        self.conversational = False
        self.device = "cpu"
        self.dtype = "float32"
        self.load_seconds = 0.0  # model load, tokenization and the reference log-probs (cache or forward)

    # --- setup ---
    def __enter__(self) -> "GateModels":
        try:
            self._load()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _load(self) -> None:
        import torch
        from datasets import Dataset
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM

        from trainer.base_models import load_tokenizer
        from trainer.devices import resolve_device, use_bf16
        from trainer.compat_trl import CachedReferenceDPOTrainer
        from trainer.dpo import attention_backends, build_dpo_config
        from trainer.ref_cache import RefLogpCache, reference_revision
        from trainer.train import quiet_libraries, to_columns

        started = time.monotonic()
        quiet_libraries()
        settings = self.training
        self.device = resolve_device(settings.device)
        if self.device == "cpu" and self.cpu_threads:
            torch.set_num_threads(self.cpu_threads)
        dtype = torch.bfloat16 if use_bf16(self.device) else torch.float32
        self.dtype = str(dtype).removeprefix("torch.")
        self.tokenizer = load_tokenizer(self.base_model_dir)
        self.conversational = settings.chat_template and bool(getattr(self.tokenizer, "chat_template", None))
        revision = reference_revision(self.base_model_dir, max_length=settings.max_length,
                                      chat_template=self.conversational, dtype=str(dtype))
        cache = RefLogpCache(self.cache_dir / "ref-logps.sqlite", revision)
        dataset = Dataset.from_dict(to_columns(self.pairs, self.tokenizer, self.conversational))
        model = AutoModelForCausalLM.from_pretrained(self.base_model_dir, dtype=dtype)
        work = Path(tempfile.mkdtemp(prefix="prefloop-eval-"))
        self._stack.callback(shutil.rmtree, work, True)
        config = build_dpo_config(settings, work, self.device, gradient_checkpointing=False)  # no backward pass here
        # The reference forward (base, adapters off) gives s_B only when the baseline is the base model.
        config.precompute_ref_log_probs = self.baseline.adapter_dir is None
        self._stack.enter_context(attention_backends(settings))
        self.trainer = CachedReferenceDPOTrainer(
            model=model, ref_model=None, args=config, train_dataset=dataset, processing_class=self.tokenizer,
            peft_config=LoraConfig.from_pretrained(str(self.candidate.adapter_dir)), ref_cache=cache,
        )
        peft_model = self.trainer.model
        peft_model.load_adapter(str(self.candidate.adapter_dir), adapter_name=CANDIDATE, is_trainable=False)
        if self.baseline.adapter_dir is not None:
            peft_model.load_adapter(str(self.baseline.adapter_dir), adapter_name=BASELINE, is_trainable=False)
        peft_model.eval()
        self.load_seconds = time.monotonic() - started

    @contextlib.contextmanager
    def using(self, side: str) -> Iterator[Any]:
        """The model with `side`'s adapter active (adapters disabled for a base-model baseline)."""
        from trainer.compat_trl import use_adapter

        name = CANDIDATE if side == CANDIDATE else (BASELINE if self.baseline.adapter_dir is not None else None)
        with use_adapter(self.trainer.model, name):
            yield self.trainer.model

    # --- scoring ---
    def score(self, progress: Progress | None = None) -> PairScores:
        """s_C and s_B of every held-out pair TRL keeps, longest pairs first in batches of `batch_size`."""
        import torch
        from torch.utils.data import DataLoader

        from trainer.heldout import policy_logps

        started = time.monotonic()
        data = self.trainer.train_dataset
        kept = list(data["pair_id"])
        dropped = sorted({p.pair_id for p in self.pairs} - set(kept))
        sizes = [len(p) + max(len(c), len(r)) for p, c, r in zip(data["prompt_ids"], data["chosen_ids"], data["rejected_ids"])]
        order = sorted(range(len(data)), key=lambda i: -sizes[i])
        ordered = data.select(order)
        loader = DataLoader(ordered, batch_size=self.batch_size, collate_fn=self.trainer.data_collator, shuffle=False,
                            generator=torch.Generator())  # leave the global RNG alone
        device = self.trainer.accelerator.device
        cand: list[float] = []
        base: list[float] = []
        done = 0
        with torch.inference_mode(), self.trainer.accelerator.autocast():
            for batch in loader:
                batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
                with self.using(CANDIDATE) as model:
                    chosen, rejected = policy_logps(model, batch)
                cand.extend((chosen.float() - rejected.float()).cpu().tolist())
                if self.baseline.adapter_dir is None:
                    base.extend((batch["ref_chosen_logps"].float() - batch["ref_rejected_logps"].float()).cpu().tolist())
                else:
                    with self.using(BASELINE) as model:
                        chosen, rejected = policy_logps(model, batch)
                    base.extend((chosen.float() - rejected.float()).cpu().tolist())
                done += len(batch["input_ids"]) // 2
                if progress:
                    progress(done, len(ordered))
        stats = self.trainer.ref_stats.get("train")
        uses_cache = self.baseline.adapter_dir is None and stats is not None
        return PairScores(
            pair_ids=list(ordered["pair_id"]),
            candidate=np.asarray(cand),
            baseline=np.asarray(base),
            dropped=dropped,
            ref_cache_hits=stats.cache_hits if uses_cache else 0,
            ref_forward_pairs=stats.forward_pairs if uses_cache else 0,
            seconds=time.monotonic() - started,
        )
