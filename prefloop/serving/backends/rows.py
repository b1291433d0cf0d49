"""One request's row in a generation batch: its tokens, its text, when it stops (pure Python, no torch).

Requests of one batch differ in max_tokens, stop sequences and end-of-sequence handling, but
`model.generate` takes one setting for the whole batch; each `Row` decides for itself and the
batch stops when every row has. Text is decoded from all of the row's tokens each step (the
tokenizer may merge bytes across tokens), and what is streamed is held back while it could still
become a stop sequence or an incomplete UTF-8 character, so nothing streamed is ever taken back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

REPLACEMENT = "\ufffd"  # what a decoder shows for an incomplete UTF-8 sequence


@dataclass
class Row:
    decode: Callable[[list[int]], str]
    max_tokens: int
    stop: tuple[str, ...] = ()
    eos_ids: frozenset[int] = frozenset()
    ignore_eos: bool = False
    tokens: list[int] = field(default_factory=list)
    text: str = ""  # the answer so far (cut at a stop sequence once one is found)
    sent: int = 0  # characters of `text` already handed out
    finish_reason: str | None = None
    cancelled: bool = False  # set from the event loop: the client left or the request timed out

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def add(self, token: int) -> str:
        """Take the row's next generated token; returns the text that may be streamed now ('' if none)."""
        if self.finished:
            return ""
        if self.cancelled:
            self.finish_reason = "cancelled"
            return ""
        if token in self.eos_ids and not self.ignore_eos:
            self.finish_reason = "stop"
            return self._release(final=True)
        self.tokens.append(token)
        self.text = self.decode(self.tokens)
        if self.stop:
            cut = self._stop_at()
            if cut is not None:
                self.text = self.text[:cut]
                self.finish_reason = "stop"
                return self._release(final=True)
        if len(self.tokens) >= self.max_tokens:
            self.finish_reason = "length"
            return self._release(final=True)
        return self._release(final=False)

    def _stop_at(self) -> int | None:
        # A stop sequence can only be new where the text changed: near its end.
        longest = max(len(s) for s in self.stop)
        window_start = max(0, self.sent - longest)
        found = [i for i in (self.text.find(s, window_start) for s in self.stop) if i >= 0]
        return min(found) if found else None

    def _release(self, final: bool) -> str:
        end = len(self.text)
        if not final:
            if self.stop:
                end -= max(len(s) for s in self.stop) - 1
            while end > self.sent and self.text[end - 1] == REPLACEMENT:
                end -= 1
        if end <= self.sent:
            return ""
        out = self.text[self.sent:end]
        self.sent = end
        return out
