"""One evaluation end to end: resolve the candidate and baseline, score the held-out set, measure the
guardrails, compute the statistics and the verdict. Shared by `prefloop eval` and the service.

    contest = resolve_contest(settings, "v1.3", baseline=None)   # baseline: production, else the base model
    heldout = load_heldout(settings, contest, gate)               # or heldout.from_file(path, gate.max_pairs)
    report = run_gate(settings, gate, contest, heldout, event_id=...)
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluator.gate import stats
from evaluator.gate.decision import GateMetrics, decide
from evaluator.gate.errors import CandidateError
from evaluator.gate.heldout import CandidateRun, HeldoutSet, for_candidate
from evaluator.gate.report import GateReport
from evaluator.gate.scoring import Side, check_adapter, run_settings
from evaluator.gate.settings import GateSettings
from schemas import PromotionEvent
from trainer.registry import ModelRegistry, ModelVersion
from trainer.settings import TrainerSettings, load_trainer_settings

# (stage, done, total): stages are "score" and "generate".
StageProgress = Callable[[str, int, int], None]
ANSWERS_KEPT = 5  # guardrail answers per side copied into the report, for a reader to glance at


@dataclass(frozen=True)
class Contest:
    """Who is compared, on what base, tokenized how."""

    candidate: Side
    baseline: Side
    candidate_version: str | None  # None when the candidate directory is not in the registry
    base_model: str  # the spec the candidate was trained on (tiny, smollm2 or a path)
    base_model_dir: Path
    training: TrainerSettings  # the candidate's run settings (tokenization: max_length, chat format)
    run: CandidateRun


def _run_record(adapter_dir: Path) -> dict[str, Any]:
    path = adapter_dir / "run.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError as exc:
        raise CandidateError(f"{path} is not valid JSON ({exc}); retrain the candidate or remove the file") from None


def _find_candidate(registry: ModelRegistry, spec: str) -> tuple[str | None, Path]:
    versions = registry.versions()
    for record in versions:
        if record.version == spec:
            if record.adapter_path is None:
                raise CandidateError(f"{spec} is the base model itself; pass a trained version as --candidate")
            return record.version, Path(record.adapter_path)
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path.resolve()
        for record in versions:
            if record.adapter_path and Path(record.adapter_path).resolve() == path:
                return record.version, path
        return None, path
    known = ", ".join(v.version for v in versions) or "none"
    raise CandidateError(f"candidate {spec!r} is neither a registry version (known: {known}) nor an adapter directory")


def _same_base(a: Path, b: Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def resolve_contest(settings: Any, candidate: str, baseline: str | None = None,
                    registry: ModelRegistry | None = None) -> Contest:
    """The candidate (a version or an adapter directory) and the baseline (`baseline`, else production,
    else the base model), checked: adapters present, same base model, not the same version."""
    from trainer.base_models import resolve_base_model

    registry = registry or ModelRegistry(settings.home)
    version, adapter_dir = _find_candidate(registry, candidate)
    name = version or str(adapter_dir)
    check_adapter(Side(name, adapter_dir))
    record = _run_record(adapter_dir)
    registered = registry.get(version) if version else None
    fallback = load_trainer_settings(settings)
    base_spec = record.get("base_model") or (registered.base_model if registered else fallback.base_model)
    base_dir = resolve_base_model(base_spec, settings.cache_dir)
    if baseline is not None:
        base_record: ModelVersion | None = registry.get(baseline)
    else:
        base_record = registry.production()
    if base_record is None:
        baseline_side = Side("base model", None)
    else:
        if base_record.version == version:
            raise CandidateError(f"{version} is both candidate and baseline; pass another --baseline")
        adapter = Path(base_record.adapter_path) if base_record.adapter_path else None
        check_adapter(Side(base_record.version, adapter))
        baseline_spec = (_run_record(adapter).get("base_model") if adapter and adapter.is_dir() else None) or base_record.base_model
        if not _same_base(resolve_base_model(baseline_spec, settings.cache_dir), base_dir):
            raise CandidateError(f"baseline {base_record.version} is built on {baseline_spec}, the candidate on {base_spec}; "
                                 "compare versions of the same base model")
        baseline_side = Side(base_record.version, adapter)
    run = CandidateRun(
        snapshot_id=record.get("snapshot_id") or (registered.snapshot_id if registered else ""),
        heldout_pair_ids=tuple(record["heldout_pair_ids"]) if "heldout_pair_ids" in record else None,
        trained_pair_ids=frozenset(record.get("new_pair_ids", [])) | frozenset(record.get("replay_pair_ids", [])),
    )
    return Contest(candidate=Side(name, adapter_dir), baseline=baseline_side, candidate_version=version, base_model=base_spec,
                   base_model_dir=base_dir, training=run_settings(adapter_dir, fallback), run=run)


def load_heldout(settings: Any, contest: Contest, gate: GateSettings) -> HeldoutSet:
    return for_candidate(settings.home, contest.run, gate.max_pairs, contest.training.heldout_fraction)


def compute_metrics(scores_diffs: list[float], pairs: list, gate: GateSettings, guardrails=None) -> GateMetrics:
    """Every statistic of the gate from the score differences of `pairs` (same order)."""
    common = dict(tie_tolerance=gate.tie_tolerance, alpha=gate.alpha, samples=gate.bootstrap_samples, seed=gate.seed)
    groups = [p.prompt_id for p in pairs]
    return GateMetrics(
        n=len(pairs),
        sign=stats.sign_test(scores_diffs, gate.tie_tolerance),
        overall=stats.group_bootstrap(scores_diffs, groups, **common),
        sources=stats.slices(scores_diffs, groups, [p.source.value for p in pairs], **common),
        length=stats.length_control(scores_diffs, groups, [len(p.chosen) for p in pairs], [len(p.rejected) for p in pairs],
                                    **common),
        guardrails=guardrails,
    )


def run_gate(settings: Any, gate: GateSettings, contest: Contest, heldout: HeldoutSet, *, event_id: str | None = None,
             training_result_id: str = "", progress: StageProgress | None = None) -> GateReport:
    """Score, measure, decide; returns the report with the PromotionEvent to publish (nothing is written)."""
    import time

    from evaluator.gate import guardrails as guard
    from evaluator.gate.scoring import GateModels

    started = time.monotonic()
    with GateModels(base_model_dir=contest.base_model_dir, training=contest.training, candidate=contest.candidate,
                    baseline=contest.baseline, pairs=heldout.pairs, cache_dir=settings.cache_dir, device=gate.device,
                    batch_size=gate.batch_size, cpu_threads=gate.cpu_threads) as models:
        scores = models.score(progress=(lambda done, total: progress("score", done, total)) if progress else None)
        guard_metrics, answers = None, {}
        if gate.guardrail_prompts:
            prompts = guard.guardrail_prompts([p.prompt for p in heldout.pairs], gate.guardrail_prompts)
            guard_metrics, answers = guard.measure(
                models, prompts, max_new_tokens=gate.max_new_tokens, batch_size=gate.generation_batch_size,
                progress=(lambda done, total: progress("generate", done, total)) if progress else None,
            )
        device, dtype, load_seconds = models.device, models.dtype, models.load_seconds
    by_id = {p.pair_id: p for p in heldout.pairs}
    scored = [by_id[pid] for pid in scores.pair_ids]
    metrics = compute_metrics(scores.diffs.tolist(), scored, gate, guard_metrics)
    verdict = decide(metrics, gate)
    event_kwargs = {"event_id": event_id} if event_id else {}
    event = PromotionEvent(candidate_version=contest.candidate.name, baseline_version=contest.baseline.name,
                           decision=verdict.decision, traffic_fraction=0.0, metrics=metrics.flat(), reason=verdict.reason,
                           **event_kwargs)
    seconds = time.monotonic() - started
    return GateReport(
        candidate=contest.candidate.name,
        baseline=contest.baseline.name,
        candidate_adapter=str(contest.candidate.adapter_dir),
        baseline_adapter=str(contest.baseline.adapter_dir) if contest.baseline.adapter_dir else None,
        verdict=verdict,
        metrics=metrics,
        heldout={"origin": heldout.origin, "pairs": len(heldout.pairs), "snapshot_pairs": heldout.snapshot_pairs,
                 "earlier_pairs": heldout.earlier_pairs, "dropped": len(scores.dropped)},
        scoring={"device": device, "dtype": dtype, "seconds": seconds, "load_seconds": load_seconds,
                 "score_seconds": scores.seconds, "pairs_per_second": len(scored) / max(seconds, 1e-9),
                 "ref_cache_hits": scores.ref_cache_hits, "ref_forward_pairs": scores.ref_forward_pairs,
                 "base_model": contest.base_model, "max_length": contest.training.max_length},
        settings=dataclasses.asdict(gate),
        event=event,
        training_result_id=training_result_id,
        answers={side: [a.text for a in texts[:ANSWERS_KEPT]] for side, texts in answers.items()},
    )
