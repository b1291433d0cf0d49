"""Named errors of the gate. Each message says what happened and what to do, in one line."""

from __future__ import annotations

from prefloop.errors import PrefloopError


class GateError(PrefloopError):
    """Base of every error the gate raises on purpose."""


class CandidateError(GateError):
    """The candidate or baseline cannot be evaluated: unknown version, missing adapter, different base model."""


class HeldoutError(GateError):
    """There is no held-out set to judge the candidate on."""


class PublishError(GateError):
    """A decision could not be published on models.promotions."""
