"""`prefloop report` through the CLI on data that went through the real pipeline: the file opens
offline in Chromium with every figure, and its numbers are the ones SQL finds in the same tables."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from prefloop import keys
from prefloop.analytics.store import ch_time
from prefloop.sdk import SyncFeedbackClient
from prefloop.services.supervisor import service_env
from prefloop.web.arena import BattleStore, Vote, today_utc
from schemas.records import prompt_hash
from streams_helpers import wait_for
from web_helpers import chromium_context, make_registry

FIGURES = ["win_rate", "thumbs_up_rate", "pairs", "drift", "trigger", "rollout", "registry", "ratings", "win_matrix"]


class Links(HTMLParser):
    """Every src/href attribute and every <link> of a page (script bodies are not parsed as tags)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.link_tags = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.link_tags += tag == "link"
        self.urls += [v or "" for k, v in attrs if k in ("src", "href")]


def emit_history(settings, tag: str) -> list[str]:
    """Ten prompts answered by v1.0 and v1.1 (v1.1 chosen 7 times), thumbs, two identical answers the
    quality rules drop, three categories tagged. Returns the chosen response ids."""
    chosen = []
    categories = ["creative", "comparison", "factual_qa"]
    with SyncFeedbackClient(settings) as sdk:
        for i in range(10):
            prompt = f"report question {i} {tag}"
            cat = {"category": categories[i % 3]}
            old = sdk.response(prompt=prompt, response=f"A terse answer number {i}.", model_version="v1.0", tags=cat)
            new = sdk.response(prompt=prompt, response=f"Gladly! Here is a careful, friendly answer, take {i}.",
                               model_version="v1.1", tags=cat)
            win, lose = (new, old) if i < 7 else (old, new)
            sdk.action(response_id=win.response_id, kind="CHOICE", rejected_response_id=lose.response_id)
            sdk.action(response_id=new.response_id, kind="THUMBS_UP" if i % 2 else "THUMBS_DOWN")
            chosen.append(win.response_id)
        same = f"Exactly the same words {tag}."
        a = sdk.response(prompt=f"dup {tag}", response=same, model_version="v1.0")
        b = sdk.response(prompt=f"dup {tag}", response=same, model_version="v1.1")
        sdk.action(response_id=a.response_id, kind="CHOICE", rejected_response_id=b.response_id)
    return chosen


@pytest.mark.services
def test_report_is_self_contained_holds_every_figure_and_matches_sql(
        web_pipeline, web_settings, store, redis_client, tag, tmp_path: Path) -> None:
    make_registry(web_settings, candidates=1)  # v1.1 (parent v1.0) is the newest version
    chosen = emit_history(web_settings, tag)
    wait_for(lambda: store.query(f"SELECT count() FROM preference_pairs FINAL WHERE chosen_response_id IN "
                             f"({','.join(repr(c) for c in chosen)})").scalar() == len(chosen), 90, what="the ten CHOICE pairs")
    wait_for(lambda: store.query(f"SELECT count() FROM pair_drops FINAL WHERE prompt_id = '{prompt_hash(f'dup {tag}')}' "
                             "AND reason = 'identical'").scalar(), 60, what="the identical pair's drop")
    now = int(time.time() * 1000)
    store.insert_rows("promotions", ["event_id", "occurred_at", "candidate_version", "baseline_version", "decision",
                                     "traffic_fraction", "metrics", "reason"],
                      [[f"p-{tag}", ch_time(now - 60_000), "v1.1", "v1.0", "PROMOTE", 0.0, {}, "gate passed"],
                       [f"a-{tag}", ch_time(now - 30_000), "v1.1", "v1.0", "ADVANCE", 0.2, {}, "stage 1 held"]])
    votes = BattleStore(redis_client, 600)
    for vote in (Vote.A, Vote.B, Vote.TIE):
        votes.count_vote(vote, today_utc())
    time.sleep(1.5)  # the sink flushes every 0.3 s: let the last rows land before the report and SQL read them

    out = tmp_path / "report.html"
    # Coverage expects a category nobody tags (other tests of the session may tag all of the brief's five).
    expected_categories = f"factual_qa,comparison,creative,never-{tag}"
    env = {**service_env(web_settings), "PREFLOOP_WEB_BOOTSTRAP_ROUNDS": "50", "PREFLOOP_WEB_CATEGORIES": expected_categories}
    done = subprocess.run([sys.executable, "-m", "prefloop.cli", "report", "--out", str(out), "--since", "1d"],
                          capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    page = out.read_text()

    links = Links()
    links.feed(page)
    external = [u for u in links.urls if u.startswith(("http:", "https:", "//"))]
    assert external == [] and links.link_tags == 0
    assert page.count("<script src") == 0
    for name in FIGURES:
        assert f"data-figure='{name}'" in page and f'id="figure-{name}"' in page
    data = json.loads(page.split('id="prefloop-report-data">', 1)[1].split("</script>", 1)[0])
    assert data["figures"] == FIGURES

    since = f"fromUnixTimestamp64Milli(toInt64({data['since_ms']}), 'UTC')"
    pairs = store.query(f"SELECT count() FROM preference_pairs FINAL WHERE created_at >= {since}").scalar()
    assert data["pairs_collected"] == pairs and f'<span data-metric="pairs_collected">{pairs}</span>' in page
    by_source = dict(store.query(f"SELECT toString(source), count() FROM preference_pairs FINAL WHERE created_at >= {since} "
                                 "GROUP BY source").rows)
    assert data["pairs_by_source"] == by_source
    assert data["pairs_target"] == 43  # the default daily target, one day
    wins, losses = store.query(f"""SELECT countIf(model_version = 'v1.1' AND rejected_model_version = 'v1.0'),
        countIf(model_version = 'v1.0' AND rejected_model_version = 'v1.1') FROM action_facts FINAL
        WHERE kind = 'CHOICE' AND occurred_at >= {since}""").rows[0]
    c = data["comparison"]
    assert (c["newest"], c["previous"], c["wins"], c["losses"]) == ("v1.1", "v1.0", wins, losses)
    assert wins >= 7 and losses >= 3
    assert c["win_rate"] == pytest.approx(wins / (wins + losses)) and c["lower"] < c["win_rate"] < c["upper"]
    q = data["quality"]
    assert q["dropped"] == store.query(f"SELECT count() FROM pair_drops FINAL WHERE occurred_at >= {since}").scalar()
    assert q["pass_share"] == pytest.approx(pairs / (pairs + q["dropped"]))
    # Responses are counted by response id, as the report does: other tests' rows may repeat one (the drift
    # test's two windows hold the same response ids).
    tagged = dict(store.query(f"SELECT tags['category'] AS c, uniqExact(response_id) FROM feedback_events FINAL "
                              f"WHERE event_type = 'response' AND occurred_at >= {since} AND c != '' GROUP BY c").rows)
    assert {k: v["responses"] for k, v in q["categories"].items()} == tagged
    assert {"creative", "comparison", "factual_qa"} <= set(q["categories"])
    assert q["missing_categories"] == [f"never-{tag}"]
    day = {k.decode(): int(v) for k, v in redis_client.hgetall(keys.ARENA_VOTES_DAY_PREFIX + today_utc()).items()}
    assert q["arena_votes"] == day
    assert q["clear_winner_share"] == pytest.approx((day.get("A", 0) + day.get("B", 0)) / sum(day.values()))
    assert any("v1.1 is trained and waits for the evaluator's gate" in a for a in data["next_actions"])

    # Opened offline in a real browser: nothing requested beyond the file, every figure drawn, no script error.
    from playwright.sync_api import sync_playwright

    requested, errors = [], []
    with sync_playwright() as p:
        browser = chromium_context(p, tmp_path / "chromium")
        page_ = browser.new_page()
        page_.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file:")
                    else (requested.append(r.request.url), r.abort()))
        page_.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page_.on("pageerror", lambda e: errors.append(str(e)))
        page_.goto(out.as_uri())
        page_.wait_for_function("document.querySelectorAll('.js-plotly-plot').length === 9", timeout=30_000)
        shot = tmp_path / "report.png"
        page_.screenshot(path=str(shot), full_page=True)
        browser.close()
    print(f"report screenshot: {shot}")
    assert requested == [] and errors == []
