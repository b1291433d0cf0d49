"""The online gate: a canary rollout controller acting on PROMOTE events and live metrics.

Modules, in the order a decision is made: `settings` and `plan` (stages and thresholds), `metrics`
(both arms' figures over the same window, from ClickHouse), `bounds` (always-valid confidence
sequences), `policy` (pure `decide`: Successful, Failed or Inconclusive → ADVANCE, COMPLETE,
ROLLBACK or wait), `state` (the rollout record persisted in Redis before every action), `lease`,
`actions` (what a decision does: event, promotions row, registry, routing), `controller` (the
loop) and `cli`.
"""
