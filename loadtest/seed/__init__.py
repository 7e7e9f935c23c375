"""The seed tutorial's pattern applied to ticks: the benchmarks' baseline, not our design.

Served by its own ASGI entry point (`loadtest.seed.asgi:application`, settings
`loadtest.seed.settings`) that `python -m loadtest.fanout --baseline` starts; the
product has no switch for it.
"""
