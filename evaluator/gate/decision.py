"""`decide(metrics, settings) -> Verdict`: PROMOTE only when every check passes, else REJECT naming the
first failing check with its numbers. Pure: the same metrics and settings give the same verdict.

Checks, in order:
1. `inconclusive`: at least `min_pairs` held-out pairs were scored.
2. `win`: the win rate's lower bound (bootstrap by prompt group, at `alpha`) exceeds 0.5 + `min_improvement`.
3. `source`: no pair source with at least `min_slice_pairs` pairs regresses (its upper bound below 0.5).
4. `length`: the win does not disappear (upper bound below 0.5) on the pairs whose chosen text is not
   longer than the rejected one, when there are at least `min_slice_pairs` of them.
5. `guardrail`: C's empty-answer share, repeated-3-gram share and length ratio against B stay within the margins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from evaluator.gate.guardrails import GuardrailMetrics
from evaluator.gate.settings import GateSettings
from evaluator.gate.stats import GroupBootstrap, LengthControl, SignTest, SliceStats
from schemas import PromotionDecision


@dataclass(frozen=True)
class GateMetrics:
    n: int  # held-out pairs scored
    sign: SignTest
    overall: GroupBootstrap
    sources: dict[str, SliceStats]
    length: LengthControl
    guardrails: GuardrailMetrics | None  # None when guardrail_prompts is 0

    def flat(self) -> dict[str, float]:
        """Every figure as one name -> number map (the PromotionEvent's `metrics`); NaN left out."""
        out: dict[str, float] = {
            "n": self.n, "wins": self.sign.wins, "losses": self.sign.losses, "ties": self.sign.ties,
            "win_rate": self.sign.win_rate, "win_rate_lower": self.overall.win_rate.lower,
            "win_rate_upper": self.overall.win_rate.upper, "p_value": self.sign.p_value,
            "mean_diff": self.overall.mean_diff.estimate, "mean_diff_lower": self.overall.mean_diff.lower,
            "mean_diff_upper": self.overall.mean_diff.upper,
        }
        for name, s in {**{f"source_{k}": v for k, v in self.sources.items()}, "length_not_longer": self.length.not_longer}.items():
            out.update({f"{name}_n": s.n, f"{name}_win_rate": s.sign.win_rate, f"{name}_lower": s.win_rate.lower,
                        f"{name}_upper": s.win_rate.upper})
        out["length_correlation"] = self.length.correlation
        out["length_correlation_p"] = self.length.correlation_p
        if self.guardrails is not None:
            g = self.guardrails
            for side, t in (("candidate", g.candidate), ("baseline", g.baseline)):
                out.update({f"guardrail_{side}_empty_rate": t.empty_rate, f"guardrail_{side}_repeat_rate": t.repeat_rate,
                            f"guardrail_{side}_mean_length": t.mean_length})
            out["guardrail_prompts"] = g.candidate.answers
            out["guardrail_length_ratio"] = g.length_ratio
        return {k: float(v) for k, v in out.items() if not (isinstance(v, float) and math.isnan(v))}


@dataclass(frozen=True)
class Verdict:
    decision: PromotionDecision  # PROMOTE or REJECT
    check: str  # the first failing check (inconclusive, win, source, length, guardrail) or "passed"
    reason: str


def _reject(check: str, reason: str) -> Verdict:
    return Verdict(PromotionDecision.REJECT, check, reason)


def guardrail_failures(g: GuardrailMetrics, s: GateSettings) -> list[str]:
    """Each guardrail C breaks against B, as a sentence with the numbers."""
    c, b = g.candidate, g.baseline
    failures = []
    if c.empty_rate - b.empty_rate > s.empty_margin:
        failures.append(f"empty answers {c.empty_rate:.0%} vs baseline {b.empty_rate:.0%} (margin {s.empty_margin:.0%})")
    if c.repeat_rate - b.repeat_rate > s.repeat_margin:
        failures.append(f"repeated 3-grams {c.repeat_rate:.0%} vs baseline {b.repeat_rate:.0%} (margin {s.repeat_margin:.0%})")
    ratio = g.length_ratio
    if not math.isnan(ratio) and not s.min_length_ratio <= ratio <= s.max_length_ratio:
        failures.append(f"answer length ratio {ratio:.2f} (candidate {c.mean_length:.1f} vs baseline {b.mean_length:.1f} "
                        f"tokens) outside {s.min_length_ratio:g}-{s.max_length_ratio:g}")
    return failures


def decide(m: GateMetrics, s: GateSettings) -> Verdict:
    if m.n < s.min_pairs:
        return _reject("inconclusive", f"inconclusive: {m.n} held-out pairs, need {s.min_pairs}")
    need = 0.5 + s.min_improvement
    sign, bounds = m.sign, m.overall.win_rate
    counts = f"{sign.wins} wins, {sign.losses} losses, {sign.ties} ties of {m.n} pairs"
    if sign.decisive == 0:
        return _reject("win", f"no win: all {m.n} held-out pairs tie (the candidate scores them like the baseline)")
    if not bounds.lower > need:
        return _reject("win", f"no significant win: win rate {bounds.estimate:.3f}, lower bound {bounds.lower:.3f} at "
                              f"alpha {s.alpha:g} is not above {need:.2f} ({counts}; sign test p={sign.p_value:.3g})")
    for source, sl in m.sources.items():
        if sl.n >= s.min_slice_pairs and sl.win_rate.upper < 0.5:
            return _reject("source", f"source {source} regresses: win rate {sl.win_rate.estimate:.3f}, upper bound "
                                     f"{sl.win_rate.upper:.3f} < 0.5 over {sl.n} pairs")
    nl = m.length.not_longer
    if nl.n >= s.min_slice_pairs and nl.win_rate.upper < 0.5:
        return _reject("length", f"length: the win disappears on the {nl.n} pairs whose chosen text is not longer "
                                 f"(win rate {nl.win_rate.estimate:.3f}, upper bound {nl.win_rate.upper:.3f} < 0.5) while "
                                 f"it holds overall ({bounds.estimate:.3f}); correlation of s_C - s_B with the length "
                                 f"difference {m.length.correlation:.2f}")
    if m.guardrails is not None:
        failures = guardrail_failures(m.guardrails, s)
        if failures:
            return _reject("guardrail", f"guardrail: {failures[0]}")
    return Verdict(PromotionDecision.PROMOTE, "passed",
                   f"win rate {bounds.estimate:.3f}, lower bound {bounds.lower:.3f} > {need:.2f} at alpha {s.alpha:g} "
                   f"({counts}; sign test p={sign.p_value:.3g}); no source regresses; the win holds where the chosen "
                   f"text is not longer; guardrails hold")
