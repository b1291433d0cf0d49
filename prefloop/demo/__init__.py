"""`prefloop demo`: the closed loop in one command (run.py), with its settings overlay, watcher and summary."""
