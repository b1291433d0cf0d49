"""The layouts of the worker's table state, as JSON in the tables' changelogs.

Keys are one or two letters on purpose: every changed prompt group is written to the changelog before
each offset commit, so the key names are paid for in bytes on every write. These TypedDicts name them
(no runtime cost: the values are plain dicts and lists, exactly what Faust's JSON codec reads back).
Changing a key changes the changelog format: a worker could no longer recover older state.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

# A response in a group: [text, model_version, occurred_at, prompt or None when it is the group's].
# A list, not a tuple, because that is what the changelog gives back.
StoredResponse = list


class HeldAction(TypedDict):
    """An action waiting for a response: in the resolve stage's `pending-actions` table (by response_id)
    and in a prompt group's `h` list (waiting for another response of the group)."""

    e: str  # event id
    b: str  # the Avro payload, base64
    p: int  # feedback.actions partition and offset it was read at (dead letters, rows)
    o: int
    a: int  # when the resolve stage first saw it (ms): the orphan TTL runs from here


class GroupState(TypedDict):
    """One prompt group in the `prompt-groups` table (streams/pairing/prompt_group.py)."""

    p: str  # the group's prompt: its first response's
    r: dict[str, StoredResponse]  # response_id -> its entry, in arrival order (the oldest is evicted first)
    v: dict[str, dict[str, int]]  # thumbs votes: response_id -> {voter: +1 | -1}
    g: dict[str, dict[str, int]]  # ratings: response_id -> {voter: rating}
    tc: dict[str, int]  # THUMBS pairs each response takes part in (capped by thumbs_cap)
    te: list[str]  # THUMBS combinations already paired ("up\x1fdown")
    re: list[str]  # RATING combinations already paired ("low id\x1fhigh id")
    s: list[str]  # recent action event ids, for the dedup of producer retries (bounded)
    h: list[HeldAction]  # actions waiting for a response not yet in the group
    pt: NotRequired[int]  # the responses partition that owns the group (the sweep needs it outside events)
