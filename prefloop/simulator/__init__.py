"""`prefloop simulate`: synthetic users with a hidden, learnable preference who ask questions and give
every kind of feedback, through the gateway (real generation) or from templates (load tests)."""
