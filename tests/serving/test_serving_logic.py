"""Pure logic of the gateway: per-row stopping and streaming, batching, per-row sampling, settings."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
import torch

from prefloop.errors import ConfigError
from prefloop.serving.backends.batching import BatchQueue, QueueFullError
from prefloop.serving.backends.decoding import RowSampler
from prefloop.serving.backends.rows import Row
from prefloop.serving.generation import SamplingParams
from prefloop.serving.settings import ServeSettings
from prefloop.setting_fields import settings_table

# A toy tokenizer: token i decodes to VOCAB[i] (0 is end-of-sequence, decoded as nothing); token 9 is an incomplete UTF-8 byte until token 10 completes it.
VOCAB = {0: "", 1: "Hel", 2: "lo", 3: " wor", 4: "ld", 5: "!", 6: " EN", 7: "D", 8: " more"}


def decode(tokens: list[int]) -> str:
    out = []
    for i, t in enumerate(tokens):
        if t == 9:
            out.append("é" if i + 1 < len(tokens) and tokens[i + 1] == 10 else "\ufffd")
        elif t != 10:
            out.append(VOCAB[t])
    return "".join(out)


def run(row: Row, tokens: list[int]) -> list[str]:
    pieces = []
    for t in tokens:
        pieces.append(row.add(t))
        if row.finished:
            break
    return pieces


def test_a_row_streams_everything_and_stops_at_eos():
    row = Row(decode, max_tokens=10, eos_ids=frozenset({0}))
    assert run(row, [1, 2, 3, 4, 0, 5]) == ["Hel", "lo", " wor", "ld", ""]
    assert (row.text, row.finish_reason, row.tokens) == ("Hello world", "stop", [1, 2, 3, 4])


def test_ignore_eos_and_max_tokens():
    row = Row(decode, max_tokens=3, eos_ids=frozenset({0}), ignore_eos=True)
    run(row, [1, 0, 2, 3])
    assert row.finish_reason == "length" and len(row.tokens) == 3


def test_a_stop_sequence_cuts_the_text_and_nothing_streamed_is_taken_back():
    row = Row(decode, max_tokens=10, stop=(" END",))
    pieces = run(row, [1, 2, 3, 6, 7, 8])
    assert row.finish_reason == "stop" and row.text == "Hello wor"
    assert "".join(pieces) == "Hello wor"  # " EN" was held back until " END" was certain


def test_an_incomplete_character_is_held_back():
    row = Row(decode, max_tokens=10)
    assert run(row, [1, 9, 10, 2]) == ["Hel", "", "é", "lo"]


def test_a_cancelled_row_finishes_without_text():
    row = Row(decode, max_tokens=10)
    row.add(1)
    row.cancelled = True
    assert row.add(2) == "" and row.finish_reason == "cancelled"


@dataclass(eq=False)
class Job:
    batch_key: str
    abandoned: bool = False


def test_batches_group_by_version_in_arrival_order_and_the_queue_is_bounded():
    async def scenario() -> list[list[Job]]:
        queue: BatchQueue[Job] = BatchQueue(max_waiting=6, max_batch=2, window_s=0.01)
        jobs = [Job("v1.0"), Job("v1.1"), Job("v1.0"), Job("v1.0", abandoned=True), Job("v1.0"), Job("v1.1")]
        for job in jobs:
            queue.put(job)
        with pytest.raises(QueueFullError) as full:
            queue.put(Job("v1.0"))
        assert full.value.status == 429 and full.value.retry_after_s == 1.0
        return [await queue.next_batch() for _ in range(3)], jobs

    batches, jobs = asyncio.run(scenario())
    assert batches == [[jobs[0], jobs[2]], [jobs[1], jobs[5]], [jobs[4]]]  # the abandoned job costs nothing


def test_seeded_rows_repeat_and_greedy_rows_are_untouched():
    scores = torch.randn(3, 50)
    scores[2] = scores[0]
    params = [SamplingParams(8, temperature=1.0, seed=5), SamplingParams(8, temperature=0.0), SamplingParams(8, temperature=1.0, seed=5)]
    first = RowSampler(params, torch.device("cpu"))(None, scores)
    second = RowSampler(params, torch.device("cpu"))(None, scores)
    assert torch.equal(first.argmax(-1), second.argmax(-1))
    assert first[0].argmax() == first[2].argmax()  # the same seed and logits draw the same token
    assert torch.equal(first[1], scores[1])
    assert torch.isinf(first[0]).sum() == 49  # only the drawn token stays possible
    nucleus = RowSampler([SamplingParams(8, temperature=1.0, top_p=1e-6, seed=s) for s in range(3)], torch.device("cpu"))
    assert torch.equal(nucleus(None, scores).argmax(-1), scores.argmax(-1))  # a tiny nucleus is the most likely token


def test_settings_are_checked_without_echoing_secrets():
    with pytest.raises(ConfigError, match="upstream_url"):
        ServeSettings(backend="openai")
    with pytest.raises(ConfigError, match="default_max_tokens"):
        ServeSettings(max_tokens=10, default_max_tokens=20)
    with pytest.raises(ConfigError, match='"max_batch_size" should be in'):
        ServeSettings(max_batch_size=0)
    table = settings_table(ServeSettings)
    assert "| `upstream_api_key` | `(secret)` |" in table and "| `batch_window_ms` | `5` |" in table
    assert "upstream-password" not in repr(ServeSettings(backend="openai", upstream_url="http://h/v1", upstream_api_key="upstream-password"))
