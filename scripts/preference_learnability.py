"""Does a model pick up the simulator's hidden preference from one DPO micro-batch, and with which settings?

    python scripts/preference_learnability.py --model smollm2 --configs "lr=1e-4" "lr=5e-4,loss=sigmoid+sft" [--json OUT]

The base model answers every question of the simulator's bank twice (sampled); simulated users turn
the answers into pairs as `prefloop simulate` would (an EDIT toward the preference for each answer, a
CHOICE between the two when their utility differs); each config trains one adapter on those pairs with
prefloop's trainer; the adapter and the base then answer questions of another seed's bank, and the
script prints the share of answers that open politely, the mean utility and the mean length. This is
what sized the demo's trainer settings (docs/demo.md).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prefloop.simulator import preference  # noqa: E402
from prefloop.simulator.questions import question_bank  # noqa: E402


def generate(model, tokenizer, questions: list[str], max_new_tokens: int, seed: int) -> list[str]:
    import torch

    torch.manual_seed(seed)
    tokenizer.padding_side = "left"
    out: list[str] = []
    for start in range(0, len(questions), 32):
        chunk = questions[start:start + 32]
        if tokenizer.chat_template:
            texts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
                     for q in chunk]
        else:  # the tiny test model has no chat template: the trainer then trains on plain text too
            texts = chunk
        enc = tokenizer(texts, return_tensors="pt", padding=True).to(model.device)
        with torch.no_grad():
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=True, temperature=0.8, top_p=0.95,
                                 pad_token_id=tokenizer.pad_token_id)
        out += tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return out


def summary(answers: list[str]) -> dict[str, float]:
    n = len(answers)
    return {"polite_share": sum(map(preference.opens_politely, answers)) / n,
            "mean_score": sum(map(preference.score, answers)) / n,
            "mean_words": sum(map(preference.word_count, answers)) / n}


def simulated_pairs(questions: list[str], first: list[str], second: list[str], seed: int) -> list[dict]:
    rng = random.Random(seed)
    pairs = []
    for q, a, b in zip(questions, first, second):
        for answer in (a, b):
            pairs.append({"prompt": q, "chosen": preference.edit_toward_preference(answer), "rejected": answer, "source": "EDIT"})
        if preference.score(a) != preference.score(b):
            chosen, rejected = (a, b) if preference.prefers_first(a, b, rng) else (b, a)
            pairs.append({"prompt": q, "chosen": chosen, "rejected": rejected, "source": "CHOICE"})
    return pairs


def parse_config(text: str) -> dict:
    out: dict = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key == "lr":
            out["learning_rate"] = float(value)
        elif key == "loss":
            out["loss_type"] = value.split("+")
        elif key == "epochs":
            out["epochs"] = float(value)
        elif key == "beta":
            out["beta"] = float(value)
        else:
            raise SystemExit(f"unknown config key {key!r} in {text!r} (lr, loss, epochs, beta)")
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--configs", nargs="+", default=["lr=1e-4", "lr=1e-4,loss=sigmoid+sft"])
    parser.add_argument("--questions", type=int, default=12, help="questions per category (5 categories)")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prefloop.settings import load_settings
    from trainer.base_models import resolve_base_model
    from trainer.devices import resolve_device
    from trainer.settings import TrainerSettings
    from trainer.snapshots import create_snapshot
    from trainer.train import run_training

    settings = load_settings()
    model_dir = resolve_base_model(args.model, settings.cache_dir)
    device = resolve_device("auto")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir).to(device)
    train_q = [q.text for q in question_bank(args.questions, seed=0)]
    test_q = [q.text for q in question_bank(args.questions, seed=1)]
    started = time.monotonic()
    first, second = generate(base, tokenizer, train_q, args.max_new_tokens, 0), generate(base, tokenizer, train_q, args.max_new_tokens, 1)
    pairs = simulated_pairs(train_q, first, second, seed=0)
    results = {"model": args.model, "device": device, "pairs": len(pairs), "generation_seconds": time.monotonic() - started,
               "base": summary(generate(base, tokenizer, test_q, args.max_new_tokens, 2)), "configs": {}}
    print(f"{len(pairs)} pairs from {2 * len(train_q)} base answers; base on new questions: {results['base']}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        snapshot = create_snapshot(pairs, home)
        for text in args.configs:
            trainer_settings = TrainerSettings(base_model=str(model_dir), batch_size=args.batch_size, progress=False,
                                               **parse_config(text))
            t0 = time.monotonic()
            run = run_training(trainer_settings, snapshot=snapshot, output_dir=home / f"run-{len(results['configs'])}",
                               home=home, cache_dir=settings.cache_dir)
            from peft import PeftModel

            tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir).to(device), str(run.output_dir))
            figures = summary(generate(tuned, tokenizer, test_q, args.max_new_tokens, 2))
            figures.update(train_seconds=time.monotonic() - t0, steps=run.metrics["steps"],
                           heldout_reward_accuracy=run.metrics["heldout_reward_accuracy"])
            results["configs"][text] = figures
            print(f"{text}: {figures}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
