"""`prefloop serve`: the OpenAI-compatible gateway that serves every model version, routes users by the
canary table and records each answer as a Response (docs/serving.md)."""
