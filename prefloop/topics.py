"""Topic names of the contract (ARCHITECTURE.md). Declared once; partition counts live in Settings."""

RESPONSES = "feedback.responses"
ACTIONS = "feedback.actions"
PAIRS = "feedback.pairs"
DLQ = "feedback.dlq"
TRAINING_REQUESTS = "training.requests"
TRAINING_RESULTS = "training.results"
PROMOTIONS = "models.promotions"

ALL = (RESPONSES, ACTIONS, PAIRS, DLQ, TRAINING_REQUESTS, TRAINING_RESULTS, PROMOTIONS)
