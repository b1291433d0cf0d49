"""prefloop: turn users' feedback into DPO preference pairs and keep the model aligned."""

__version__ = "0.1.0"
