"""The offline gate: held-out preference scoring of a trained adapter against the version users get
now, significance, length control and guardrails, then PROMOTE or REJECT on `models.promotions`."""
