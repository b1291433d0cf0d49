"""Event-time alignment's rules (streams/alignment.py) over a stand-in consumer: which actions
partitions it holds back, given the responses the group stage has fetched and processed."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

from faust.types import TP

from streams import alignment
from streams.alignment import EventTimeAlignment

RESPONSES, ACTIONS = "feedback.responses", "feedback.actions"


@dataclass
class Consumer:
    """The parts of BatchingConsumer the alignment reads."""

    states: dict = field(default_factory=dict)  # TP -> (position, highwater)
    delivered: dict = field(default_factory=dict)  # TP -> (offset, timestamp)

    def assignment(self) -> set[TP]:
        return {TP(RESPONSES, 0), TP(RESPONSES, 1), TP(ACTIONS, 0), TP(ACTIONS, 1)}

    def fetch_state(self, tp: TP):
        if tp not in self.states:
            return None
        position, highwater = self.states[tp]
        return SimpleNamespace(position=position, highwater=highwater, has_valid_position=position is not None)


def aligned(consumer: Consumer, processed: dict) -> EventTimeAlignment:
    return EventTimeAlignment(SimpleNamespace(consumer=consumer), RESPONSES, ACTIONS, processed)


def caught_up(consumer: Consumer, partition: int, end: int) -> None:
    consumer.states[TP(RESPONSES, partition)] = (end, end)


def test_nothing_is_held_when_the_responses_are_caught_up():
    consumer = Consumer(delivered={TP(ACTIONS, 0): (9, 5_000)})
    caught_up(consumer, 0, 10)
    caught_up(consumer, 1, 0)
    assert aligned(consumer, {})() == set()


def test_actions_ahead_of_the_processed_responses_wait():
    consumer = Consumer(delivered={TP(ACTIONS, 0): (9, 5_000), TP(ACTIONS, 1): (3, 1_000),
                                   TP(RESPONSES, 0): (40, 2_000)})
    consumer.states[TP(RESPONSES, 0)] = (41, 100)  # fetched up to 41 of 100
    caught_up(consumer, 1, 7)
    # processed through the response at 2,000 ms: actions at 5,000 ms wait, those at 1,000 go on
    assert aligned(consumer, {0: (40, 2_000)})() == {TP(ACTIONS, 0)}


def test_delivered_but_unprocessed_responses_count_as_behind():
    consumer = Consumer(delivered={TP(ACTIONS, 0): (9, 5_000), TP(RESPONSES, 1): (50, 4_000)})
    caught_up(consumer, 0, 10)
    caught_up(consumer, 1, 51)  # all fetched and delivered, processed only through offset 20
    assert aligned(consumer, {1: (20, 3_000)})() == {TP(ACTIONS, 0)}
    assert aligned(consumer, {1: (50, 4_000)})() == set()


def test_unfetched_responses_hold_back_even_actions_with_nothing_delivered():
    consumer = Consumer(delivered={TP(ACTIONS, 0): (9, 5_000)})
    caught_up(consumer, 1, 0)  # partition 0 not fetched yet: its backlog is unknown
    assert aligned(consumer, {})() == {TP(ACTIONS, 0), TP(ACTIONS, 1)}
    # once it has processed something, an actions partition with nothing delivered gets one fetch
    consumer.states[TP(RESPONSES, 0)] = (30, 100)
    assert aligned(consumer, {0: (29, 6_000)})() == set()


def test_holding_back_stops_when_the_responses_make_no_progress(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(alignment.time, "monotonic", lambda: clock[0])
    consumer = Consumer(delivered={TP(ACTIONS, 0): (9, 5_000)})
    consumer.states[TP(RESPONSES, 0)] = (41, 100)
    caught_up(consumer, 1, 0)
    processed = {0: (40, 2_000)}
    align = aligned(consumer, processed)
    assert align() == {TP(ACTIONS, 0)}
    clock[0] += alignment.STALL_S + 1
    assert align() == set()  # stuck responses must not stall the actions
    processed[0] = (60, 2_500)
    assert align() == {TP(ACTIONS, 0)}
