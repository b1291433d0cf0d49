"""Named errors of the trainer. Each message says what happened and what to do, in one line."""

from __future__ import annotations

from prefloop.errors import PrefloopError


class TrainerError(PrefloopError):
    """Base of every error the trainer raises on purpose."""


class PairsFileError(TrainerError):
    """A pairs JSON-lines file is missing, empty or has a bad line (the message names the line)."""


class TooFewPairsError(TrainerError):
    """A run has fewer training or held-out pairs than the settings require."""


class SnapshotError(TrainerError):
    """A dataset snapshot is missing, corrupt, or its id is taken by different pairs."""


class BaseModelError(TrainerError):
    """A base model cannot be found, built or loaded."""


class RegistryError(TrainerError):
    """The model registry refused an operation (unknown version, nothing to roll back, …)."""


class JobError(TrainerError):
    """A training job subprocess failed, was killed or timed out."""
