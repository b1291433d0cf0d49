"""Event-time alignment of the two input topics: in catch-up, actions wait for their responses.

An action can only be resolved once the group stage has taken its response. Live, responses
come first, so that holds. After downtime or a burst both topics hold a backlog and the
consumer reads them side by side. Actions then run ahead of the responses they need: each
one is held in the `pending-actions` table, written to its changelog, then released and
forwarded when the response is indexed. In the bench (150,000 events) that was 88k holds
for 104k actions and 53k changelog records; with the alignment, none.

Like Kafka Streams' timestamp-ordered processing of joined inputs, the consumer therefore does
not fetch an actions partition while it is ahead, in record time, of the responses still
to be processed:

- the horizon is the oldest record timestamp up to which the group stage has processed
  each owned responses partition that is still behind. Behind means not fetched up to its
  high watermark, or fetched further than processed. No horizon when none is behind.
- an actions partition is held back while the timestamp of its last delivered record is
  past the horizon; one with nothing delivered yet, while a behind responses partition has
  processed nothing yet (its next record's time is unknown until it is fetched).

This is an optimisation, never a correctness rule: held actions are handled as before. It
cannot stall the actions for good, because responses never wait for actions. As a safety
net, holding back stops whenever no responses partition has made progress for
`STALL_S` seconds. Only this worker's responses partitions count, so with several workers
the alignment is partial: an action whose response another worker owns is not waited for.
"""

from __future__ import annotations

import time
from typing import Any

from faust.types import TP

STALL_S = 5.0  # no responses progress for this long: stop holding actions back


class EventTimeAlignment:
    """The actions partitions not to fetch now (`BatchingApp.hold_back`)."""

    def __init__(self, app: Any, responses: str, actions: str, processed: dict[int, tuple[int, int]]) -> None:
        self.app = app
        self.responses = responses
        self.actions = actions
        # responses partition -> (offset, record timestamp ms) the group stage has processed through
        self.processed = processed
        self._progress: tuple = ()
        self._progress_at = time.monotonic()

    def __call__(self) -> set[TP]:
        consumer = self.app.consumer
        horizon = self.horizon(consumer)
        if horizon is None:
            return set()
        progress = tuple(sorted(self.processed.items()))
        now = time.monotonic()
        if progress != self._progress:
            self._progress, self._progress_at = progress, now
        elif now - self._progress_at > STALL_S:
            return set()
        delivered = consumer.delivered
        held = set()
        for tp in consumer.assignment():
            if tp.topic == self.actions:
                last = delivered.get(tp)
                if (last[1] > horizon) if last is not None else horizon == float("-inf"):
                    held.add(tp)
        return held

    def horizon(self, consumer: Any) -> float | None:
        """The record time the group stage has processed every behind responses partition
        through (-inf when one has processed nothing yet); None when none is behind."""
        horizon: float | None = None
        for tp in consumer.assignment():
            if tp.topic != self.responses:
                continue
            if not self._behind(consumer, tp):
                continue
            done = self.processed.get(tp.partition)
            at = float(done[1]) if done is not None else float("-inf")
            horizon = at if horizon is None else min(horizon, at)
        return horizon

    def _behind(self, consumer: Any, tp: TP) -> bool:
        state = consumer.fetch_state(tp)
        if state is None or state.highwater is None or not state.has_valid_position:
            return True  # not fetched yet: its backlog is unknown
        if state.position < state.highwater:
            return True
        delivered = consumer.delivered.get(tp)
        done = self.processed.get(tp.partition)
        return delivered is not None and (done is None or done[0] < delivered[0])
