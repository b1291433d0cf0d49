"""A deterministic mixed workload and the pairs the rules must make from it (computed with the pure rules)."""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas import Action, ActionKind, AvroRecord, Response, pair_hash
from streams.pairing.group import PromptGroup, RuleSettings
from streams.pairing.quality import QualityRules


@dataclass
class Workload:
    tag: str
    responses: list[Response] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    duplicates: list[AvroRecord] = field(default_factory=list)  # re-deliveries of the same events

    def records(self) -> list[AvroRecord]:
        """Responses, then actions, then re-deliveries; order between topics is not guaranteed anyway."""
        return [*self.responses, *self.actions, *self.duplicates]

    def expected_pairs(self, rules: RuleSettings | None = None, quality: QualityRules | None = None) -> dict[str, tuple]:
        """pair_id -> (source, chosen, rejected), as the pipeline must publish them."""
        rules = rules or RuleSettings()
        quality = quality or QualityRules()
        groups: dict[str, PromptGroup] = {}
        for r in self.responses:
            groups.setdefault(r.prompt_id, PromptGroup(r.prompt_id, None, rules)).add_response(r)
        by_rid = {r.response_id: r.prompt_id for r in self.responses}
        out: dict[str, tuple] = {}
        for a in self.actions:
            group = groups[by_rid[a.response_id]]
            if group.seen(a.event_id) or group.missing_references(a):
                continue
            group.mark_seen(a.event_id)
            for d in group.apply(a):
                if quality.check(d.chosen, d.rejected) is None:
                    out.setdefault(pair_hash(d.prompt, d.chosen, d.rejected), (d.source.value, d.chosen, d.rejected))
        return out


def mixed(tag: str, groups: int, duplicate_every: int = 7) -> Workload:
    """Per prompt group: 4 responses (two versions), EDIT, CHOICE, THUMBS up/down, RATING and ACCEPT actions.

    Votes on one response all go one way, so the pairs do not depend on arrival order."""
    w = Workload(tag)
    n = 0
    for g in range(groups):
        prompt = f"[{tag}] Question {g}: how should I structure module {g * 7 % 13} of the billing service?"
        rs = [Response(response_id=f"{tag}-g{g}-r{i}", prompt=prompt, model_version=("v1", "v2")[i % 2],
                       response=f"Answer {i} for question {g}: " + " ".join(f"step{i}{j}" for j in range(6 + i)),
                       tags={"category": ("coding", "billing", "chat")[g % 3]}, user_id=f"user{g}")
              for i in range(4)]
        w.responses.extend(rs)
        acts = [
            Action(response_id=rs[0].response_id, kind=ActionKind.EDIT, user_id=f"e{g}",
                   edited_text=f"Edited answer for question {g}: split billing into ledger, invoices and payments."),
            Action(response_id=rs[1].response_id, kind=ActionKind.CHOICE, rejected_response_id=rs[0].response_id),
            Action(response_id=rs[2].response_id, kind=ActionKind.THUMBS_UP, user_id=f"a{g}"),
            Action(response_id=rs[2].response_id, kind=ActionKind.THUMBS_UP, user_id=f"b{g}"),
            Action(response_id=rs[3].response_id, kind=ActionKind.THUMBS_DOWN, user_id=f"c{g}"),
            Action(response_id=rs[1].response_id, kind=ActionKind.RATING, rating=5, user_id=f"d{g}"),
            Action(response_id=rs[3].response_id, kind=ActionKind.RATING, rating=1, user_id=f"f{g}"),
            Action(response_id=rs[0].response_id, kind=ActionKind.ACCEPT, user_id=f"h{g}"),
        ]
        w.actions.extend(acts)
        for rec in (*rs, *acts):
            n += 1
            if duplicate_every and n % duplicate_every == 0:
                w.duplicates.append(rec)
    return w
