"""Automatic gradient checkpointing: the memory estimate, the rule that picks the fewest checkpointed
layers that fit, the setting overriding it, and training results that do not depend on the choice."""

from __future__ import annotations

import pytest
from trainer_synthetic import polite_pairs

from prefloop.errors import ConfigError
from trainer.memory import GIB, ModelShape, choose_checkpointing, estimate, lora_parameter_count
from trainer.settings import TrainerSettings
from trainer.snapshots import create_snapshot
from trainer.train import run_training

# The published SmolLM2-1.7B shape and a 7B Llama shape.
SMOLLM2_1B7 = ModelShape(layers=24, hidden=2048, intermediate=8192, kv_dim=2048, parameters=1_711_000_000)
LLAMA_7B = ModelShape(layers=32, hidden=4096, intermediate=11008, kv_dim=4096, parameters=6_738_000_000)


def choose(shape: ModelShape, free_gib: float | None, setting: str = "auto", tokens: int = 16 * 512, dtype_bytes: int = 2):
    return choose_checkpointing(
        setting, shape, tokens=tokens, dtype_bytes=dtype_bytes,
        lora_parameters=lora_parameter_count(shape, 16, ["q_proj", "k_proj", "v_proj", "o_proj"]),
        free_bytes=None if free_gib is None else int(free_gib * GIB), budget_fraction=0.8,
    )


def test_estimate_falls_with_each_checkpointed_layer_and_counts_weights():
    tokens = 32 * 256
    values = [estimate(SMOLLM2_1B7, tokens=tokens, dtype_bytes=2, lora_parameters=0, checkpointed_layers=k).total
              for k in range(0, 25)]
    assert all(b < a for a, b in zip(values[:23], values[1:24]))  # every further layer saves memory…
    assert values[24] > values[23]  # …but the last: it is recomputed as soon as the backward pass starts
    assert estimate(SMOLLM2_1B7, tokens=tokens, dtype_bytes=2, lora_parameters=0, checkpointed_layers=24).weights == 2 * 1_711_000_000


def test_a_7b_model_on_a_24gb_card_gets_checkpointing_and_fits():
    choice = choose(LLAMA_7B, free_gib=23.0)
    assert choice.enabled and 0 < choice.checkpointed_layers <= 32
    assert choice.estimate_without.total > 0.8 * 23 * GIB  # would not fit without
    assert choice.estimate_chosen.total <= 0.8 * 23 * GIB
    assert "of 32 layers checkpointed" in choice.reason
    fewer = choose_checkpointing("auto", LLAMA_7B, tokens=16 * 512, dtype_bytes=2, lora_parameters=0,
                                 free_bytes=int(23 * GIB), budget_fraction=0.8)
    assert estimate(LLAMA_7B, tokens=16 * 512, dtype_bytes=2, lora_parameters=0,
                    checkpointed_layers=fewer.checkpointed_layers - 1).total > 0.8 * 23 * GIB  # and it is the fewest


def test_a_model_that_fits_trains_without_checkpointing():
    choice = choose(SMOLLM2_1B7, free_gib=79.0)
    assert not choice.enabled and choice.reason.startswith("auto: fits without")


def test_nothing_fits_means_every_layer_and_a_warning_reason():
    choice = choose(LLAMA_7B, free_gib=10.0)
    assert choice.checkpointed_layers == 31 and "still" in choice.reason and "lower batch_size" in choice.reason


def test_the_setting_overrides_the_rule_and_unknown_memory_is_safe():
    assert choose(SMOLLM2_1B7, free_gib=79.0, setting="on").checkpointed_layers == 24
    assert choose(LLAMA_7B, free_gib=10.0, setting="off").checkpointed_layers == 0
    assert choose(SMOLLM2_1B7, free_gib=None).checkpointed_layers == 24


def test_setting_values():
    assert TrainerSettings().gradient_checkpointing == "auto"
    assert TrainerSettings(gradient_checkpointing="true").gradient_checkpointing == "on"  # the old boolean spelling
    assert TrainerSettings(gradient_checkpointing="False").gradient_checkpointing == "off"
    with pytest.raises(ConfigError, match='"gradient_checkpointing" should be one of auto, on, off'):
        TrainerSettings(gradient_checkpointing="sometimes")
    with pytest.raises(ConfigError, match='"memory_budget_fraction" should be in'):
        TrainerSettings(memory_budget_fraction=1.5)


def test_training_results_do_not_depend_on_the_choice(settings, tiny_settings, monkeypatch):
    """Checkpointing recomputes the same activations: the same run with none, some and every layer
    checkpointed learns the same adapter (held-out accuracy and margin equal, losses within fp32 noise)."""
    import trainer.memory

    snap = create_snapshot(polite_pairs(64, seed=5), settings.home)
    runs = {}
    for name, setting, free in (("off", "off", None), ("on", "on", None), ("auto-1", "auto", "one layer")):
        if free == "one layer":
            # A free-memory figure just short of the no-checkpointing estimate makes the rule pick some layers.
            real = trainer.memory.choose_checkpointing

            def squeezed(setting_, shape, **kw):
                without = trainer.memory.estimate(shape, tokens=kw["tokens"], dtype_bytes=kw["dtype_bytes"],
                                                  lora_parameters=kw["lora_parameters"], checkpointed_layers=0).total
                kw["free_bytes"] = int((without - 1) / kw["budget_fraction"])
                return real(setting_, shape, **kw)

            monkeypatch.setattr(trainer.memory, "choose_checkpointing", squeezed)
        run = run_training(tiny_settings.replace(gradient_checkpointing=setting, max_steps=12), snapshot=snap,
                           output_dir=settings.home / f"out-{name}", home=settings.home, cache_dir=settings.cache_dir)
        runs[name] = run.metrics
    assert runs["off"]["checkpointed_layers"] == 0 and runs["on"]["checkpointed_layers"] == 2
    assert runs["auto-1"]["checkpointed_layers"] == 1 and runs["auto-1"]["gradient_checkpointing"].startswith("auto: 1 of 2")
    for name in ("on", "auto-1"):
        assert runs[name]["heldout_reward_accuracy"] == runs["off"]["heldout_reward_accuracy"]
        assert runs[name]["heldout_reward_margin"] == pytest.approx(runs["off"]["heldout_reward_margin"], rel=1e-3, abs=1e-5)
        assert runs[name]["train_loss"] == pytest.approx(runs["off"]["train_loss"], rel=1e-3)
