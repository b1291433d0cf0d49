"""A deterministic mixed workload and the pairs the rules must make from it, for `prefloop bench
streams` and the pipeline tests: the expected pairs come from the pure rules (streams/pairing/), so
whatever reaches feedback.pairs can be compared with them exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas import Action, ActionKind, AvroRecord, Response, pair_hash
from streams.pairing.prompt_group import PromptGroup
from streams.pairing.quality import QualityRules
from streams.settings import StreamsSettings

EVENTS_PER_GROUP = 12  # 4 responses and 8 actions


@dataclass
class Workload:
    tag: str
    responses: list[Response] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    duplicates: list[AvroRecord] = field(default_factory=list)  # re-deliveries of the same events

    def records(self) -> list[AvroRecord]:
        """Responses, then actions, then re-deliveries; order between topics is not guaranteed anyway."""
        return [*self.responses, *self.actions, *self.duplicates]

    def expected_pairs(self, ss: StreamsSettings | None = None) -> dict[str, tuple[str, str, str]]:
        """pair_id -> (source, chosen, rejected), as the pipeline must publish them under `ss`' rules."""
        ss = ss or StreamsSettings()
        quality = QualityRules.from_settings(ss)
        groups: dict[str, PromptGroup] = {}
        for r in self.responses:
            groups.setdefault(r.prompt_id, PromptGroup(r.prompt_id, None, ss)).add_response(r)
        by_rid = {r.response_id: r.prompt_id for r in self.responses}
        out: dict[str, tuple[str, str, str]] = {}
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
    """Per prompt group: 4 responses (two versions, tagged) and EDIT, CHOICE, THUMBS up/up/down, RATING 5 and
    2, and ACCEPT actions; every `duplicate_every`-th record is delivered again at the end (0: none).

    Votes on one response all go one way, so the pairs do not depend on arrival order."""
    w = Workload(tag)
    n = 0
    for g in range(groups):
        prompt = f"[{tag}] question {g}: how do I tune batch size {g % 97} for service {g % 13}?"
        rs = [Response(response_id=f"{tag}-{g}-{i}", prompt=prompt, model_version=("v1", "v2")[i % 2],
                       response=f"answer {i} to {g}: " + " ".join(f"w{(g * 7 + i * 3 + j) % 101}" for j in range(20 + 4 * i)),
                       tags={"category": ("coding", "billing", "chat", "search")[g % 4], "locale": ("en", "de")[g % 2]})
              for i in range(4)]
        acts = [
            Action(response_id=rs[0].response_id, kind=ActionKind.EDIT, user_id=f"u{g}a",
                   edited_text=f"edited answer to {g}: use adaptive batching with a {g % 50 + 10} ms bound"),
            Action(response_id=rs[1].response_id, kind=ActionKind.CHOICE, rejected_response_id=rs[0].response_id),
            Action(response_id=rs[2].response_id, kind=ActionKind.THUMBS_UP, user_id=f"u{g}b"),
            Action(response_id=rs[2].response_id, kind=ActionKind.THUMBS_UP, user_id=f"u{g}c"),
            Action(response_id=rs[3].response_id, kind=ActionKind.THUMBS_DOWN, user_id=f"u{g}d"),
            Action(response_id=rs[1].response_id, kind=ActionKind.RATING, rating=5, user_id=f"u{g}e"),
            Action(response_id=rs[3].response_id, kind=ActionKind.RATING, rating=2, user_id=f"u{g}f"),
            Action(response_id=rs[0].response_id, kind=ActionKind.ACCEPT, user_id=f"u{g}g"),
        ]
        w.responses.extend(rs)
        w.actions.extend(acts)
        for rec in (*rs, *acts):
            n += 1
            if duplicate_every and n % duplicate_every == 0:
                w.duplicates.append(rec)
    return w
