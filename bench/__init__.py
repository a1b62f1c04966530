"""The benchmark harness: the runtime's throughput, latency and memory against rq, Celery and plain loops.

``python -m bench`` (or ``bash bench/run``, which also installs what it needs) starts its own Redis
and SMTP sink on free loopback ports, runs every section against them, stops them, and prints one
markdown table. See ``bench/README.md`` for what each row measures and how.
"""
