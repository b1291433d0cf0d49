"""Patches of library internals the streams rely on, one module per library (see prefloop/compat.py)."""
