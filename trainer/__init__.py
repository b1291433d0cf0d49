"""DPO micro-batch trainer: pairs → frozen snapshot → LoRA adapter (TRL DPOTrainer + PEFT) → model registry.

Modules, in the order of the data flow: `pairs_io` (read pairs files), `snapshots` (freeze a run's
pairs), `split` (held-out by a stable hash), `mix` (replay and per-source weights), `ref_cache`
(reference log-probs on disk), `dpo` (TRL DPOTrainer wired to that cache), `heldout` (implicit-reward
metrics), `train` (one job from `TrainerSettings`), `registry` (versions on disk, mirrored), `job` and
`service` (the long-running consumer of training.requests), `cli` and `bench` (thin commands).
Nothing here imports torch at module level except the modules that train.
"""
