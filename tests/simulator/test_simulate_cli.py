"""`prefloop simulate --mode template` through the CLI against the session's real Kafka: every answer it
reports is a Response on feedback.responses and every action an Action on feedback.actions."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter

from prefloop import topics
from prefloop.services.supervisor import service_env
from schemas import Action, Response, decode
from kafka_testing import end_offsets, read_range


def test_template_simulation_emits_what_it_reports(services, tmp_path):
    env = service_env(services)
    before = {t: asyncio.run(end_offsets(services.bootstrap_servers, t)) for t in (topics.RESPONSES, topics.ACTIONS)}
    report_file = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "prefloop.cli", "simulate", "--mode", "template", "--users", "6", "--rate", "40",
         "--duration", "30", "--max-requests", "60", "--seed", "11", "--json", str(report_file)],
        capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(report_file.read_text())
    assert report["requests"] == 60 and report["failed"] == 0
    responses = [decode(m.value) for m in asyncio.run(read_range(services.bootstrap_servers, topics.RESPONSES, before[topics.RESPONSES]))]
    actions = [decode(m.value) for m in asyncio.run(read_range(services.bootstrap_servers, topics.ACTIONS, before[topics.ACTIONS]))]
    mine = [r for r in responses if isinstance(r, Response) and r.user_id and r.user_id.startswith("sim-u11-")]
    assert len(mine) == report["answers"] >= 60  # A/B requests get two answers
    assert {r.tags["source"] for r in mine} == {"simulator"} and {r.tags["category"] for r in mine} >= {"factual_qa", "creative"}
    ids = {r.response_id for r in mine}
    my_actions = [a for a in actions if isinstance(a, Action) and a.response_id in ids]
    assert Counter(a.kind.value for a in my_actions) == Counter(report["actions"])
    assert {a.kind.value for a in my_actions} >= {"THUMBS_UP", "THUMBS_DOWN", "EDIT", "CHOICE"}
    # The versions are the routing table's (other tests of the session may have set one).
    truth = report["ground_truth"]["versions"]
    assert set(truth) == {r.model_version for r in mine}
    assert sum(v["answers"] for v in truth.values()) == len(mine)
    assert all(0 < v["expected_thumbs_up_rate"] < 1 for v in truth.values())
    assert "true up-rate" in done.stdout  # the printed table


def test_generate_mode_without_a_gateway_is_one_line_and_nothing_is_counted_as_success(services, tmp_path):
    env = service_env(services)
    done = subprocess.run(
        [sys.executable, "-m", "prefloop.cli", "simulate", "--users", "2", "--rate", "5", "--duration", "2",
         "--gateway", "http://127.0.0.1:9"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1
    assert "0 answers" in done.stdout and "failed" in done.stdout and "error x" in done.stdout
