"""Held-out metrics from the DPO implicit reward, computed after training.

For each held-out pair the implicit reward of a completion is beta × (policy log-prob − reference
log-prob), summed over completion tokens exactly as TRL scores them (its fused LM head, same
tokenization and truncation); the reference log-probs come from the cache. Accuracy is the share of
pairs whose chosen reward is strictly greater than the rejected one; margin is the mean difference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from datasets import Dataset
from torch.utils.data import DataLoader


@dataclass(frozen=True)
class HeldoutMetrics:
    pairs: int
    accuracy: float
    margin: float
    chosen_reward: float
    rejected_reward: float

    @classmethod
    def empty(cls) -> "HeldoutMetrics":
        nan = math.nan
        return cls(pairs=0, accuracy=nan, margin=nan, chosen_reward=nan, rejected_reward=nan)


def policy_logps(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion log-probs of the chosen and rejected halves of a TRL preference batch."""
    completion_mask = batch["completion_mask"]
    labels = batch["input_ids"].masked_fill(completion_mask == 0, -100)
    outputs = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels, fused_lm_head=True, use_cache=False
    )
    seq_len = completion_mask.size(1) - 1
    logps = outputs.log_probs[:, -seq_len:].sum(dim=1)
    return logps.chunk(2, dim=0)


@torch.no_grad()
def evaluate_heldout(trainer, dataset: Dataset | None) -> HeldoutMetrics:
    """Implicit-reward accuracy and margin of `trainer`'s current policy on a prepared held-out set
    (tokenized by TRL, with `ref_chosen_logps` / `ref_rejected_logps` columns)."""
    if dataset is None or len(dataset) == 0:
        return HeldoutMetrics.empty()
    model = trainer.model
    was_training = model.training
    model.eval()
    beta = trainer.beta
    loader = DataLoader(dataset, batch_size=trainer.args.per_device_eval_batch_size, collate_fn=trainer.data_collator,
                        generator=torch.Generator())  # leave the global RNG alone
    chosen_rewards, rejected_rewards = [], []
    try:
        for batch in loader:
            batch = {k: v.to(trainer.accelerator.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            with trainer.accelerator.autocast():
                chosen, rejected = policy_logps(model, batch)
            chosen_rewards.append(beta * (chosen.float().cpu() - batch["ref_chosen_logps"].float().cpu()))
            rejected_rewards.append(beta * (rejected.float().cpu() - batch["ref_rejected_logps"].float().cpu()))
    finally:
        model.train(was_training)
    chosen_all = torch.cat(chosen_rewards)
    rejected_all = torch.cat(rejected_rewards)
    return HeldoutMetrics(
        pairs=len(chosen_all),
        accuracy=(chosen_all > rejected_all).float().mean().item(),
        margin=(chosen_all - rejected_all).mean().item(),
        chosen_reward=chosen_all.mean().item(),
        rejected_reward=rejected_all.mean().item(),
    )
