"""The gate's report: one JSON document (every figure, the verdict, the PromotionEvent published) and a
short Markdown summary, written next to the candidate's adapter as `evaluation.json` / `evaluation.md`.

The saved event is what makes a redelivered training result cheap and safe: the service republishes
it (same `event_id`) instead of evaluating twice.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evaluator.gate.decision import GateMetrics, Verdict
from schemas import PromotionEvent
from schemas.records import now_ms
from trainer.fsutil import atomic_write_text

REPORT_JSON = "evaluation.json"
REPORT_MD = "evaluation.md"


@dataclass(frozen=True)
class GateReport:
    candidate: str  # registry version, or the adapter directory when it is not registered
    baseline: str
    candidate_adapter: str
    baseline_adapter: str | None  # None: the base model
    verdict: Verdict
    metrics: GateMetrics
    heldout: dict[str, Any]  # origin, pairs, snapshot_pairs, earlier_pairs, dropped
    scoring: dict[str, Any]  # device, dtype, seconds, pairs_per_second, reference cache use
    settings: dict[str, Any]  # the GateSettings used
    event: PromotionEvent
    training_result_id: str = ""  # the training.results event that asked for it (service only)
    answers: dict[str, list[str]] = field(default_factory=dict)  # guardrail answers per side (first few kept)
    created_at: int = field(default_factory=now_ms)

    def to_json(self) -> dict[str, Any]:
        """The whole report as JSON-safe data (NaN becomes null). Top-level keys give the headline figures."""
        flat = self.metrics.flat()
        g = self.metrics.guardrails
        doc = {
            "decision": self.verdict.decision.value,
            "reason": self.verdict.reason,
            "check": self.verdict.check,
            "candidate": self.candidate,
            "baseline": self.baseline,
            "n": self.metrics.n,
            "win_rate": self.metrics.sign.win_rate,
            "win_rate_lower": self.metrics.overall.win_rate.lower,
            "win_rate_upper": self.metrics.overall.win_rate.upper,
            "p_value": self.metrics.sign.p_value,
            "mean_diff": self.metrics.overall.mean_diff.estimate,
            "mean_diff_lower": self.metrics.overall.mean_diff.lower,
            "wins": self.metrics.sign.wins,
            "losses": self.metrics.sign.losses,
            "ties": self.metrics.sign.ties,
            "sources": {k: _slice(v) for k, v in self.metrics.sources.items()},
            "length": {**_slice(self.metrics.length.not_longer), "correlation": self.metrics.length.correlation,
                       "correlation_p": self.metrics.length.correlation_p},
            "guardrails": None if g is None else {
                "candidate": asdict(g.candidate), "baseline": asdict(g.baseline), "length_ratio": g.length_ratio,
            },
            "candidate_adapter": self.candidate_adapter,
            "baseline_adapter": self.baseline_adapter,
            "heldout": self.heldout,
            "scoring": self.scoring,
            "settings": self.settings,
            "metrics": flat,
            "event": self.event.to_avro(),
            "training_result_id": self.training_result_id,
            "answers": self.answers,
            "created_at": self.created_at,
        }
        return _json_safe(doc)


def _slice(s) -> dict[str, Any]:
    return {"n": s.n, "win_rate": s.sign.win_rate, "lower": s.win_rate.lower, "upper": s.win_rate.upper,
            "wins": s.sign.wins, "losses": s.sign.losses, "ties": s.sign.ties}


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _num(value: Any, fmt: str = ".3f") -> str:
    return "n/a" if value is None else format(value, fmt)


def markdown(doc: dict[str, Any]) -> str:
    """A short human summary of a report document (`GateReport.to_json()`)."""
    lines = [
        f"# Evaluation of {doc['candidate']} against {doc['baseline']}: {doc['decision']}",
        "",
        f"{doc['reason']}",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| held-out pairs | {doc['n']} ({doc['heldout']['origin']}) |",
        f"| win rate (ties dropped) | {_num(doc['win_rate'])} [{_num(doc['win_rate_lower'])}, {_num(doc['win_rate_upper'])}] |",
        f"| wins / losses / ties | {doc['wins']} / {doc['losses']} / {doc['ties']} |",
        f"| sign test p (one-sided) | {_num(doc['p_value'], '.3g')} |",
        f"| mean s_C - s_B (nats) | {_num(doc['mean_diff'])} (lower bound {_num(doc['mean_diff_lower'])}) |",
        f"| not-longer pairs win rate | {_num(doc['length']['win_rate'])} over {doc['length']['n']} "
        f"(upper bound {_num(doc['length']['upper'])}) |",
        f"| correlation with length difference | {_num(doc['length']['correlation'], '.2f')} |",
    ]
    for source, s in doc["sources"].items():
        lines.append(f"| source {source} | {_num(s['win_rate'])} over {s['n']} [{_num(s['lower'])}, {_num(s['upper'])}] |")
    g = doc["guardrails"]
    if g:
        c, b = g["candidate"], g["baseline"]
        lines += [
            f"| empty answers C / B | {_num(c['empty_rate'], '.0%')} / {_num(b['empty_rate'], '.0%')} ({c['answers']} prompts) |",
            f"| repeated 3-grams C / B | {_num(c['repeat_rate'], '.0%')} / {_num(b['repeat_rate'], '.0%')} |",
            f"| answer length C / B (tokens) | {_num(c['mean_length'], '.1f')} / {_num(b['mean_length'], '.1f')} "
            f"(ratio {_num(g['length_ratio'], '.2f')}) |",
        ]
    s = doc["scoring"]
    lines += ["", f"Scored on {s['device']} ({s['dtype']}) at {_num(s['pairs_per_second'], '.1f')} pairs/s; "
                  f"event `{doc['event']['event_id']}`."]
    return "\n".join(lines) + "\n"


def write_report(report: GateReport, adapter_dir: Path) -> Path:
    """Write `evaluation.json` (atomically, last) and `evaluation.md` next to the adapter; returns the JSON path."""
    doc = report.to_json()
    adapter_dir = Path(adapter_dir)
    atomic_write_text(adapter_dir / REPORT_MD, markdown(doc))
    path = adapter_dir / REPORT_JSON
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    return path


def read_report(adapter_dir: Path) -> dict[str, Any] | None:
    """The saved report document, or None when there is none (or it cannot be read: evaluate again)."""
    path = Path(adapter_dir) / REPORT_JSON
    try:
        doc = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return doc if isinstance(doc, dict) and "event" in doc else None


def saved_event(doc: dict[str, Any]) -> PromotionEvent:
    return PromotionEvent.from_json(doc["event"])
