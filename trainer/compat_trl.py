"""The TRL patch (trl 1.16.0): reference log-probs from prefloop's cache through TRL's precompute path.

TRL 1.16 consumes precomputed reference log-probs through `precompute_ref_log_probs=True`: its
`__init__` calls `_precompute_ref_logps(dataset, name, batch_size)` on the tokenized train and eval
sets, which must return them with `ref_chosen_logps` / `ref_rejected_logps` columns; the collator
carries the columns into each batch and `_compute_loss` uses them instead of a reference forward.
`CachedReferenceDPOTrainer` overrides only that step (trainer/dpo.py configures it).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import torch
import trl.trainer.dpo_trainer as trl_dpo_trainer
from datasets import Dataset
from torch.utils.data import DataLoader
from trl import DPOTrainer
from trl.trainer.utils import use_adapter

from prefloop.compat import Internal, require_version
from trainer.ref_cache import RefLogpCache, RefStats

VERSION = "1.16.0"
require_version("trl", VERSION, __name__)

# Every TRL internal prefloop overrides, replaces or mirrors, with its source digest in VERSION.
INTERNALS = (
    Internal("trl.trainer.dpo_trainer:DPOTrainer._precompute_ref_logps", "f2c098c7da6ca701",
             "replaced by CachedReferenceDPOTrainer._precompute_ref_logps"),
    Internal("trl.trainer.dpo_trainer:DPOTrainer.__init__", "632f447c71dcb043",
             "calls _precompute_ref_logps and hash_module with precompute_ref_log_probs"),
    Internal("trl.trainer.dpo_trainer:hash_module", "6b2d3f18279485e6", "replaced while __init__ runs"),
    Internal("trl.trainer.dpo_trainer:DPOTrainer.compute_ref_log_probs", "90611af9cbadb8ec", "the reference forward on misses"),
    Internal("trl.trainer.dpo_trainer:DPOTrainer._compute_loss", "5e58a1699e0d76cd",
             "mirrored by trainer/heldout.py policy_logps (fused LM head log-probs over the completion)"),
    Internal("trl.trainer.utils:use_adapter", "edd0e493f99fa685", "the gate switches adapters with it (evaluator/gate/scoring.py)"),
)

__all__ = ["CachedReferenceDPOTrainer", "INTERNALS", "use_adapter"]


@contextlib.contextmanager
def _reference_revision_as_model_hash(revision: str) -> Iterator[None]:
    """With `precompute_ref_log_probs`, TRL's `__init__` hashes every weight (copied to the CPU, widened to
    fp32, sha256) to key its own precompute cache. Our `_precompute_ref_logps` replaces that cache and
    keys it by the reference revision, so the hash is pure cost: ~20 s of a 1.7B model's start on an
    H100 host. The revision stands in for it while `__init__` runs."""
    original = trl_dpo_trainer.hash_module
    trl_dpo_trainer.hash_module = lambda module: revision
    try:
        yield
    finally:
        trl_dpo_trainer.hash_module = original


class CachedReferenceDPOTrainer(DPOTrainer):
    """DPOTrainer whose precomputed reference log-probs come from (and go to) a `RefLogpCache`."""

    def __init__(self, *args, ref_cache: RefLogpCache, **kwargs) -> None:
        # Set before super().__init__, which precomputes the reference log-probs.
        self.ref_cache = ref_cache
        self.ref_stats: dict[str, RefStats] = {}
        with _reference_revision_as_model_hash(ref_cache.revision):
            super().__init__(*args, **kwargs)

    def _precompute_ref_logps(self, dataset: Dataset, name: str, batch_size: int) -> Dataset:
        started = time.monotonic()
        stats = self.ref_stats.setdefault(name, RefStats())
        ids: list[str] = list(dataset["pair_id"])
        unique = list(dict.fromkeys(ids))
        known = self.ref_cache.get_many(unique)
        missing = [pid for pid in unique if pid not in known]
        stats.cache_hits += len(unique) - len(missing)
        stats.forward_pairs += len(missing)
        if missing:
            first = {}
            for index, pid in enumerate(ids):
                first.setdefault(pid, index)
            subset = dataset.select([first[pid] for pid in missing])
            computed = self._reference_forward(subset, batch_size)
            self.ref_cache.put_many(computed)
            known.update(computed)
        dataset = dataset.add_column("ref_chosen_logps", [known[pid][0] for pid in ids])
        dataset = dataset.add_column("ref_rejected_logps", [known[pid][1] for pid in ids])
        stats.seconds += time.monotonic() - started
        return dataset

    def _reference_forward(self, subset: Dataset, batch_size: int) -> dict[str, tuple[float, float]]:
        """TRL's `compute_ref_log_probs` over `subset`, longest-first batches of similar length."""
        lengths = subset["length"] if "length" in subset.column_names else [0] * len(subset)
        order = sorted(range(len(subset)), key=lambda i: -lengths[i])
        subset = subset.select(order)
        # A private generator: iterating a DataLoader draws a seed, and drawing it from the global RNG
        # would make a cold-cache run train differently from a warm one.
        loader = DataLoader(subset, batch_size=batch_size, collate_fn=self.data_collator, shuffle=False,
                            generator=torch.Generator())
        device = self.accelerator.device
        out: dict[str, tuple[float, float]] = {}
        pair_ids = subset["pair_id"]
        offset = 0
        for batch in loader:
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            chosen, rejected = self.compute_ref_log_probs(self.model, batch)
            for c, r in zip(chosen.float().cpu().tolist(), rejected.float().cpu().tolist(), strict=True):
                out[pair_ids[offset]] = (c, r)
                offset += 1
        return out
