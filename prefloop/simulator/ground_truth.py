"""What the simulator knows and prefloop has to measure: per model version, the true mean utility of
the answers served and the thumbs-up rate the users' hidden preference implies, beside what the
users actually clicked."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from prefloop.simulator.preference import score, thumbs_up_probability


@dataclass
class VersionTruth:
    answers: int = 0
    score_sum: float = 0.0
    expected_up_sum: float = 0.0
    thumbs_up: int = 0
    thumbs_down: int = 0
    polite: int = 0

    @property
    def mean_score(self) -> float:
        return self.score_sum / self.answers if self.answers else float("nan")

    @property
    def expected_thumbs_up_rate(self) -> float:
        return self.expected_up_sum / self.answers if self.answers else float("nan")

    @property
    def clicked_thumbs_up_rate(self) -> float:
        votes = self.thumbs_up + self.thumbs_down
        return self.thumbs_up / votes if votes else float("nan")


@dataclass
class GroundTruth:
    versions: dict[str, VersionTruth] = field(default_factory=lambda: defaultdict(VersionTruth))
    ab_wins: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))  # (winner, loser) versions

    def served(self, version: str, text: str) -> None:
        from prefloop.simulator.preference import opens_politely

        truth = self.versions[version]
        truth.answers += 1
        truth.score_sum += score(text)
        truth.expected_up_sum += thumbs_up_probability(text)
        truth.polite += opens_politely(text)

    def voted(self, version: str, up: bool) -> None:
        if up:
            self.versions[version].thumbs_up += 1
        else:
            self.versions[version].thumbs_down += 1

    def chose(self, winner: str, loser: str) -> None:
        if winner != loser:
            self.ab_wins[(winner, loser)] += 1

    def to_json(self) -> dict:
        out = {}
        for version, t in sorted(self.versions.items()):
            out[version] = {"answers": t.answers, "mean_score": t.mean_score, "expected_thumbs_up_rate": t.expected_thumbs_up_rate,
                            "clicked_thumbs_up_rate": t.clicked_thumbs_up_rate, "thumbs_up": t.thumbs_up,
                            "thumbs_down": t.thumbs_down, "polite_share": t.polite / t.answers if t.answers else float("nan")}
        return {"versions": out, "ab_wins": {f"{w}>{l}": n for (w, l), n in sorted(self.ab_wins.items())}}
