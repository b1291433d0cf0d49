"""One prompt group's state and the four pair rules over it; pure logic, no I/O.

A prompt group is every response sharing a `prompt_id` (A/B variants, regenerations) plus
the feedback on them. Its state is a plain JSON-able dict (`GroupState`, streams/state.py) so it
can live in a Faust table and its changelog. Every transition is idempotent: a vote or rating is stored per voter
(the user, else the event), so applying the same action twice leaves the same state.

Rules (ARCHITECTURE.md, "Pair rules"):
- EDIT: chosen = the human's edited text, rejected = the model's original response.
- CHOICE: chosen = the action's response, rejected = `rejected_response_id`'s response.
- THUMBS: every (up-voted, down-voted) combination in the group, each response in at most
  `thumbs_cap` pairs. A response's label is the sign of its users' net votes.
- RATING: every two responses whose mean ratings differ by at least `rating_gap`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from schemas import Action, ActionKind, PairSource, Response
from streams.settings import StreamsSettings
from streams.state import GroupState, HeldAction

HUMAN_VERSION = "human"  # chosen_model_version of EDIT pairs: the chosen text is the user's


@dataclass(frozen=True)
class PairDraft:
    """A pair proposed by a rule, before the quality rules and deduplication."""

    source: PairSource
    prompt: str
    chosen: str
    rejected: str
    chosen_response_id: str
    rejected_response_id: str | None
    chosen_model_version: str
    rejected_model_version: str
    weight: float
    event_id: str  # the action that completed the pair
    occurred_at: int


def _voter(action: Action) -> str:
    return action.user_id if action.user_id else "e:" + action.event_id


class PromptGroup:
    """Responses and feedback of one prompt_id; `state` (a `GroupState`) is the form kept in the table."""

    def __init__(self, prompt_id: str, state: GroupState | None, rules: StreamsSettings) -> None:
        self.prompt_id = prompt_id
        self.rules = rules
        self.state: GroupState = state if state is not None else cast(GroupState, {})
        st = self.state
        st.setdefault("p", "")
        st.setdefault("r", {})
        for key in ("v", "g", "tc"):
            st.setdefault(key, {})
        for key in ("te", "re", "s", "h"):
            st.setdefault(key, [])
        self._seen = set(st["s"])
        self._te = set(st["te"])
        self._re = set(st["re"])

    # --- responses ---------------------------------------------------------------------------
    def has_response(self, response_id: str) -> bool:
        return response_id in self.state["r"]

    def add_response(self, resp: Response) -> bool:
        """Add a response; False when it was already there (a duplicate delivery)."""
        st = self.state
        if resp.response_id in st["r"]:
            return False
        if not st["p"]:
            st["p"] = resp.prompt
        st["r"][resp.response_id] = [resp.response, resp.model_version, resp.occurred_at,
                                     None if resp.prompt == st["p"] else resp.prompt]
        while len(st["r"]) > self.rules.max_group_responses:
            oldest = next(iter(st["r"]))
            del st["r"][oldest]
            for key in ("v", "g", "tc"):
                st[key].pop(oldest, None)
        return True

    def response(self, response_id: str) -> tuple[str, str, int, str]:
        """(text, model_version, occurred_at, prompt) of a response in the group."""
        text, version, at, prompt = self.state["r"][response_id]
        return text, version, at, prompt if prompt is not None else self.state["p"]

    def missing_references(self, action: Action) -> list[str]:
        refs = [action.response_id]
        if action.kind is ActionKind.CHOICE and action.rejected_response_id:
            refs.append(action.rejected_response_id)
        return [r for r in refs if r not in self.state["r"]]

    # --- event-level dedup ------------------------------------------------------------------
    def seen(self, event_id: str) -> bool:
        return event_id in self._seen

    def mark_seen(self, event_id: str) -> None:
        seen_list = self.state["s"]
        seen_list.append(event_id)
        self._seen.add(event_id)
        overflow = len(seen_list) - self.rules.seen_events_per_group
        if overflow > 0:
            for old in seen_list[:overflow]:
                self._seen.discard(old)
            del seen_list[:overflow]

    # --- held actions ----------------------------------------------------------------------------
    def hold(self, entry: HeldAction) -> None:
        if all(h["e"] != entry["e"] for h in self.state["h"]):
            self.state["h"].append(entry)

    def held(self) -> list[HeldAction]:
        return list(self.state["h"])

    def release(self, event_ids: set[str]) -> None:
        self.state["h"] = [h for h in self.state["h"] if h["e"] not in event_ids]

    # --- pair rules ------------------------------------------------------------------------------
    def apply(self, action: Action) -> list[PairDraft]:
        """Apply one action whose references are all in the group; return the pairs it completes."""
        kind = action.kind
        if kind is ActionKind.EDIT:
            return [self._edit_pair(action)]
        if kind is ActionKind.CHOICE:
            return [self._choice_pair(action)]
        if kind in (ActionKind.THUMBS_UP, ActionKind.THUMBS_DOWN):
            self._record(self.state["v"], action, 1 if kind is ActionKind.THUMBS_UP else -1)
            return self._thumbs_pairs(action)
        if kind is ActionKind.RATING and action.rating is not None:
            self._record(self.state["g"], action, int(action.rating))
            return self._rating_pairs(action)
        return []  # ACCEPT: analytics only

    def _record(self, table: dict[str, dict[str, int]], action: Action, value: int) -> None:
        votes = table.setdefault(action.response_id, {})
        voter = _voter(action)
        if voter in votes or len(votes) < self.rules.max_voters_per_response:
            votes[voter] = value

    def _draft(self, source: PairSource, action: Action, chosen_id: str, rejected_id: str, weight: float) -> PairDraft:
        chosen, chosen_v, _, prompt = self.response(chosen_id)
        rejected, rejected_v, _, _ = self.response(rejected_id)
        return PairDraft(source, prompt, chosen, rejected, chosen_id, rejected_id, chosen_v, rejected_v,
                         weight, action.event_id, action.occurred_at)

    def _edit_pair(self, action: Action) -> PairDraft:
        original, version, _, prompt = self.response(action.response_id)
        return PairDraft(PairSource.EDIT, prompt, action.edited_text or "", original, action.response_id, None,
                         HUMAN_VERSION, version, self.rules.weight_edit, action.event_id, action.occurred_at)

    def _choice_pair(self, action: Action) -> PairDraft:
        assert action.rejected_response_id is not None
        return self._draft(PairSource.CHOICE, action, action.response_id, action.rejected_response_id,
                           self.rules.weight_choice)

    def _thumbs_pairs(self, action: Action) -> list[PairDraft]:
        st, cap = self.state, self.rules.thumbs_cap
        ups, downs = [], []
        for rid in st["r"]:
            net = sum(st["v"].get(rid, {}).values())
            if net > 0:
                ups.append(rid)
            elif net < 0:
                downs.append(rid)
        counts = st["tc"]
        out = []
        for up in ups:
            for down in downs:
                if counts.get(up, 0) >= cap:
                    break
                combo = f"{up}\x1f{down}"
                if combo in self._te or counts.get(down, 0) >= cap:
                    continue
                self._te.add(combo)
                st["te"].append(combo)
                counts[up] = counts.get(up, 0) + 1
                counts[down] = counts.get(down, 0) + 1
                out.append(self._draft(PairSource.THUMBS, action, up, down, self.rules.weight_thumbs))
        return out

    def _rating_pairs(self, action: Action) -> list[PairDraft]:
        st = self.state
        rid = action.response_id
        means = {r: sum(v.values()) / len(v) for r, v in st["g"].items() if v and r in st["r"]}
        mine = means.get(rid)
        if mine is None:
            return []
        out = []
        for other in st["r"]:  # arrival order keeps the output deterministic
            if other == rid or other not in means:
                continue
            combo = f"{min(rid, other)}\x1f{max(rid, other)}"
            if combo in self._re or abs(mine - means[other]) < self.rules.rating_gap:
                continue
            self._re.add(combo)
            st["re"].append(combo)
            hi, lo = (rid, other) if mine > means[other] else (other, rid)
            out.append(self._draft(PairSource.RATING, action, hi, lo, self.rules.weight_rating))
        return out
