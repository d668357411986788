"""Operator tools, apart from the daemons: `up` (a whole local pipeline with a live view),
`cluster` (the commands that talk to a running cluster: generate, verify-weights, status, dlq,
and the blocking JSON-over-HTTP helpers they use), `term` (tables, bars, the live view) and
`bench` (the end-to-end benchmark's entry; its flags are in `benchargs`)."""
