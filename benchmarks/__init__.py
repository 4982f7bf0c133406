"""Benchmarks of event-driven Tango clients, each run against a private TangoSandbox.

Run ``python -m benchmarks --help`` from the repository root; BENCHMARKS.md explains
what each benchmark measures and records a reference run.
"""
