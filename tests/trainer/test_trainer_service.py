"""The trainer service's per-request logic (`handle_request`) with real job subprocesses, no Kafka."""

from __future__ import annotations

import asyncio
import io
import os
import signal

from trainer_synthetic import polite_pairs

from schemas import TrainingRequest, TrainingStatus, TriggerReason
from prefloop.services.process import free_port
from trainer.registry import ModelRegistry, VersionStatus
from prefloop.keys import TRIGGER_LOCK as TRIGGER_LOCK_KEY
from trainer.service import handle_request, release_trigger_lock
from trainer.snapshots import create_snapshot


class Recorder:
    def __init__(self) -> None:
        self.published = []
        self.lock_releases = 0

    async def publish(self, result) -> None:
        self.published.append(result)

    def release(self) -> None:
        self.lock_releases += 1


def request_for(snapshot_id: str) -> TrainingRequest:
    return TrainingRequest(snapshot_id=snapshot_id, reason=TriggerReason.NEW_PAIRS, pair_count=60)


async def test_timed_out_job_fails_is_retried_and_leaves_no_version(settings, tiny_settings):
    snap = create_snapshot(polite_pairs(60, seed=1), settings.home)
    registry = ModelRegistry(settings.home)
    rec = Recorder()
    ts = tiny_settings.replace(job_timeout_s=1.0, job_retries=1, retry_backoff_s=0.1)
    req = request_for(snap.snapshot_id)
    result = await handle_request(req, settings, rec.publish, trainer_settings=ts, registry=registry, release_lock=rec.release)
    assert result.status is TrainingStatus.FAILED
    assert result.request_id == req.event_id and result.version is None
    assert "attempt 1: training job exceeded job_timeout_s=1s" in result.reason
    assert "attempt 2: training job exceeded" in result.reason
    assert rec.published == [result] and rec.lock_releases == 1
    assert registry.versions() == []
    attempts = sorted(p.name for p in (settings.home / "runs" / req.event_id).iterdir() if p.is_dir())
    assert attempts == ["attempt-1", "attempt-2"]


async def test_sigkilled_job_fails_and_leaves_no_version(settings, tiny_settings):
    snap = create_snapshot(polite_pairs(60, seed=1), settings.home)
    registry = ModelRegistry(settings.home)
    registry.ensure_base("tiny")
    rec = Recorder()
    req = request_for(snap.snapshot_id)
    ts = tiny_settings.replace(job_timeout_s=300, job_retries=0)
    task = asyncio.create_task(
        handle_request(req, settings, rec.publish, trainer_settings=ts, registry=registry, release_lock=rec.release)
    )
    pid_file = settings.home / "runs" / req.event_id / "attempt-1" / "job.pid"
    for _ in range(300):
        if pid_file.is_file() and pid_file.read_text().strip():
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)  # what the OOM killer does
    result = await asyncio.wait_for(task, timeout=60)
    assert result.status is TrainingStatus.FAILED
    assert "killed by SIGKILL (out of memory?)" in result.reason
    assert [v.version for v in registry.versions()] == ["v1.0"]
    assert rec.published == [result] and rec.lock_releases == 1


async def test_bad_input_is_not_retried(settings, tiny_settings):
    rec = Recorder()
    req = request_for("no-such-snapshot")
    ts = tiny_settings.replace(job_retries=3, retry_backoff_s=30)
    result = await asyncio.wait_for(
        handle_request(req, settings, rec.publish, trainer_settings=ts, registry=ModelRegistry(settings.home),
                       release_lock=rec.release),
        timeout=60,
    )
    assert result.status is TrainingStatus.FAILED
    assert "exited with code 2" in result.reason and "snapshot no-such-snapshot not found" in result.reason
    assert "attempt 2" not in result.reason
    assert rec.lock_releases == 1


async def test_successful_job_registers_a_candidate_and_redelivery_republishes(settings, tiny_settings):
    snap = create_snapshot(polite_pairs(80, seed=2), settings.home)
    registry = ModelRegistry(settings.home)
    rec = Recorder()
    req = request_for(snap.snapshot_id)
    ts = tiny_settings.replace(job_timeout_s=300, job_retries=0)
    result = await handle_request(req, settings, rec.publish, trainer_settings=ts, registry=registry, release_lock=rec.release)
    assert result.status is TrainingStatus.SUCCEEDED, result.reason
    assert result.version == "v1.1" and result.parent_version == "v1.0" and result.snapshot_id == snap.snapshot_id
    assert result.metrics["heldout_reward_accuracy"] >= 0.9
    assert result.metrics["ref_forward_pairs"] == 80
    assert os.path.isfile(os.path.join(result.adapter_path, "adapter_config.json"))
    record = registry.get("v1.1")
    assert record.status is VersionStatus.CANDIDATE and record.adapter_path == result.adapter_path

    # The same request delivered again (service restarted before committing): no second job, same answer.
    again = await handle_request(req, settings, rec.publish, trainer_settings=ts, registry=registry, release_lock=rec.release)
    assert again.version == "v1.1" and again.status is TrainingStatus.SUCCEEDED
    assert [v.version for v in registry.versions()] == ["v1.0", "v1.1"]
    assert len(rec.published) == 2 and rec.lock_releases == 2


def test_lock_release_without_redis_warns_in_one_line(settings, capsys):
    assert release_trigger_lock(settings, timeout_s=0.5) is False
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and TRIGGER_LOCK_KEY in err[0]


def test_registry_promote_rollback_and_mirror(tmp_path):
    class Mirror:
        def __init__(self) -> None:
            self.seen = []

        def mirror(self, version_record) -> None:
            self.seen.append((version_record.version, version_record.status.value))

    mirror = Mirror()
    registry = ModelRegistry(tmp_path, mirror)
    a = registry.register_candidate(adapter_path="/a", base_model="tiny", snapshot_id="s1", metrics={"x": 1.0})
    b = registry.register_candidate(adapter_path="/b", base_model="tiny", snapshot_id="s2", metrics={})
    assert (a.version, b.version) == ("v1.1", "v1.2") and a.parent_version == b.parent_version == "v1.0"
    assert mirror.seen == [("v1.0", "production"), ("v1.1", "candidate"), ("v1.2", "candidate")]
    registry.promote("v1.1")
    assert registry.production().version == "v1.1" and registry.get("v1.0").status is VersionStatus.RETIRED
    c = registry.register_candidate(adapter_path="/c", base_model="tiny", snapshot_id="s3", metrics={})
    assert c.parent_version == "v1.1"
    registry.promote("v1.3")
    restored = registry.rollback(reason="win rate dropped")
    assert restored.version == "v1.1" and registry.production().version == "v1.1"
    assert registry.get("v1.3").status is VersionStatus.ROLLED_BACK
    assert mirror.seen[-2:] == [("v1.1", "production"), ("v1.3", "rolled_back")]
    registry.set_status("v1.2", "rejected", reason="worse held-out accuracy")
    assert registry.get("v1.2").status is VersionStatus.REJECTED
    # A fresh object reads the same truth from disk.
    assert [(v.version, v.status.value) for v in ModelRegistry(tmp_path).versions()] == [
        ("v1.0", "retired"), ("v1.1", "production"), ("v1.2", "rejected"), ("v1.3", "rolled_back")
    ]


def test_services_mirror_warns_once_and_registry_still_works(settings):
    from trainer.mirror import ServicesMirror

    stream = io.StringIO()
    registry = ModelRegistry(settings.home, ServicesMirror(settings, warn_stream=stream, redis_timeout_s=0.5))
    registry.register_candidate(adapter_path="/a", base_model="tiny", snapshot_id="s", metrics={"acc": 0.9})
    registry.promote("v1.1")
    lines = stream.getvalue().strip().splitlines()
    assert len(lines) == 1
    assert "model_versions" in lines[0] and "prefloop:routing" in lines[0]
    assert registry.production().version == "v1.1"


def test_services_mirror_catches_up_after_an_outage(services, store, tmp_path):
    """Changes made while the analytics store was unreachable reach `model_versions` with the first
    write after it answers again (here: the store's address becomes a live one)."""
    from dataclasses import replace

    from trainer.mirror import ServicesMirror

    home = tmp_path / "home"
    stream = io.StringIO()
    mirror = ServicesMirror(replace(services, home=home, analytics_port=free_port(), redis_url="redis://127.0.0.1:1/0"),
                            warn_stream=stream, redis_timeout_s=0.3, backoff_s=(0.0, 0.0))
    registry = ModelRegistry(home, mirror)
    mirror.versions_source = registry.versions
    registry.register_candidate(adapter_path="/a", base_model="tiny", snapshot_id=f"outage-{home.name}", metrics={})
    registry.set_status("v1.1", "approved")
    assert len(stream.getvalue().strip().splitlines()) == 1  # one warning for the whole outage

    mirror.settings = replace(mirror.settings, analytics_port=services.analytics_port)  # the store answers again
    registry.register_candidate(adapter_path="/b", base_model="tiny", snapshot_id=f"after-{home.name}", metrics={})
    rows = store.query(f"SELECT version, status, snapshot_id FROM model_versions FINAL WHERE snapshot_id LIKE '%{home.name}' "
                       "ORDER BY version").rows
    assert [tuple(r[:2]) for r in rows] == [("v1.1", "approved"), ("v1.2", "candidate")]
