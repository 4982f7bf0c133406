"""Shared fixtures: the session sandbox and per-test servers from milonga.testing."""

pytest_plugins = ["milonga.testing"]
