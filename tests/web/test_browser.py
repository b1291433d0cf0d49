"""The web app in a real headless Chromium, end to end: `prefloop web` and `prefloop serve` (the tiny
model, v1.0 and a LoRA v1.1) over the session's Kafka, Redis and chDB, with a streams worker.

Ask in the arena, vote, see the CHOICE on feedback.actions and its pair in preference_pairs; a second
vote on the same battle adds nothing; the leaderboard and dashboard draw their plots with no
JavaScript error. Screenshots of each tab are saved under the test's temporary directory.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from prefloop import topics
from prefloop.services.process import free_port
from prefloop.services.supervisor import service_env
from prefloop.settings import Settings
from schemas.records import ActionKind, prompt_hash
from serving_helpers import make_adapter, start_serve
from streams_helpers import read_topic, wait_for
from web_helpers import WebProcess, chromium_context, decodable

QUESTION = "What should I pack for a weekend hike?"


@pytest.fixture(scope="module")
def stack(services: Settings, web_pipeline, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, str]]:
    """A home whose registry holds v1.0 (tiny, production) and v1.1 (a LoRA candidate); the gateway and the
    web app on free ports, using Redis database 2 (their own routing table, battles and votes)."""
    from trainer.registry import ModelRegistry
    from trainer.tiny_model import ensure_tiny_model

    root = tmp_path_factory.mktemp("web-browser")
    cache = root / "cache"
    model_dir = ensure_tiny_model(cache)
    registry = ModelRegistry(root / "home")
    registry.ensure_base("tiny")
    registry.register_candidate(adapter_path=make_adapter(model_dir, root / "adapters" / "v1.1", seed=11), base_model="tiny",
                                snapshot_id="s1", metrics={})
    settings = Settings(home=root / "home", kafka_port=services.kafka_port, redis_port=services.redis_port,
                        redis_url=services.redis_dsn.rsplit("/", 1)[0] + "/2", analytics_port=services.analytics_port,
                        cache_dir=cache, serve_port=free_port(), web_port=free_port(), start_timeout_s=5)
    env = service_env(settings)
    env.pop("PREFLOOP_CONFIG", None)
    env.update({"PREFLOOP_TRAINER_BASE_MODEL": "tiny", "PREFLOOP_SERVE_DEVICE": "cpu", "PREFLOOP_SERVE_CPU_THREADS": "1",
                "PREFLOOP_WEB_MAX_TOKENS": "24", "PREFLOOP_WEB_BOOTSTRAP_ROUNDS": "50"})
    import redis

    client = redis.Redis.from_url(settings.redis_dsn)
    client.flushdb()  # database 2 belongs to this module
    client.close()
    gateway = start_serve(env, root, "gateway", port=settings.serve_port)
    web = WebProcess(env, root / "web.log")
    try:
        gateway.wait_ready(240)
        web.wait_ready()
        yield settings, str(root)
    finally:
        web.stop()
        gateway.stop()


@pytest.mark.services
def test_arena_vote_leaderboard_and_dashboard_in_chromium(stack, store, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    settings, _ = stack
    question = f"{QUESTION} ({time.time_ns()})"
    problems: list[str] = []
    shots: dict[str, Path] = {}
    with sync_playwright() as p:
        browser = chromium_context(p, tmp_path / "chromium-profile")
        page = browser.new_page()
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.goto(settings.web_url)
        expect(page.locator("#arena-today")).to_contain_text("Preferences collected today:", timeout=60_000)
        expect(page.locator("#arena-today")).to_contain_text("/ 43")

        page.locator("#arena-question textarea").fill(question)
        page.locator("#arena-ask").click()
        expect(page.locator("#arena-status")).to_contain_text("Both answers are in", timeout=180_000)
        answer_a = page.locator("#arena-answer-a textarea").input_value()
        answer_b = page.locator("#arena-answer-b textarea").input_value()
        assert answer_a and answer_b
        shots["arena"] = tmp_path / "arena.png"
        page.screenshot(path=str(shots["arena"]), full_page=True)

        page.locator("#vote-a").click()
        expect(page.locator("#arena-status")).to_contain_text("Your vote: A is better", timeout=60_000)
        reveal = page.locator("#arena-status").inner_text()
        assert "Model A was v1." in reveal and "Model B was v1." in reveal
        expect(page.locator("#vote-b")).to_be_disabled()
        shots["arena-voted"] = tmp_path / "arena-voted.png"
        page.screenshot(path=str(shots["arena-voted"]), full_page=True)

        # A second click on the same battle (the button re-enabled by hand, as a replayed request would be):
        # the server refuses it.
        page.evaluate("document.querySelector('#vote-b').disabled = false")
        page.locator("#vote-b").click(force=True)
        expect(page.locator("#arena-status")).to_contain_text("already has its vote (A is better)", timeout=60_000)

        rows = wait_for(lambda: store.query(
            "SELECT response_id, model_version, tags['battle_id'], tags['arena_side'] FROM feedback_events FINAL "
            f"WHERE event_type = 'response' AND prompt_id = '{prompt_hash(question)}' ORDER BY tags['arena_side']").rows,
            60, what="the two arena Responses the gateway recorded")
        assert len(rows) == 2 and [r[3] for r in rows] == ["A", "B"] and rows[0][2] == rows[1][2]
        (a_id, a_version, battle_id, _), (b_id, b_version, _, _) = rows
        assert {a_version, b_version} == {"v1.0", "v1.1"}  # production against the newest candidate
        assert f"Model A was {a_version}, Model B was {b_version}." in reveal

        pair = wait_for(lambda: store.query(
            f"SELECT source, chosen_model_version, rejected_response_id FROM preference_pairs FINAL "
            f"WHERE chosen_response_id = '{a_id}'").rows, 60, what="the vote's pair")
        assert pair == [["CHOICE", a_version, b_id]]

        page.get_by_role("tab", name="Leaderboard").click()
        expect(page.locator("#plot-ratings .js-plotly-plot")).to_have_count(1, timeout=60_000)
        expect(page.locator("#plot-win-matrix .js-plotly-plot")).to_have_count(1)
        expect(page.locator("#leaderboard-table")).to_contain_text(a_version)
        shots["leaderboard"] = tmp_path / "leaderboard.png"
        page.screenshot(path=str(shots["leaderboard"]), full_page=True)

        page.get_by_role("tab", name="Dashboard").click()
        expect(page.locator("#tab-dashboard .js-plotly-plot")).to_have_count(7, timeout=60_000)
        expect(page.locator("#plot-registry")).to_contain_text("v1.1")
        page.wait_for_timeout(500)
        shots["dashboard"] = tmp_path / "dashboard.png"
        page.screenshot(path=str(shots["dashboard"]), full_page=True)
        browser.close()
    for name, path in shots.items():
        print(f"screenshot {name}: {path}")
    assert problems == []
    # One vote on the topic, after both clicks (read outside Playwright's event loop).
    actions = decodable([r.value for r in read_topic(settings, topics.ACTIONS)])
    mine = [a for a in actions if a.response_id in (a_id, b_id)]
    assert [(a.kind, a.response_id, a.rejected_response_id) for a in mine] == [(ActionKind.CHOICE, a_id, b_id)]
