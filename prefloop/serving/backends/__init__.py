"""Backends that generate answers: `local` (transformers + PEFT) and `openai` (an upstream such as vLLM)."""
