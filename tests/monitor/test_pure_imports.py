"""The pure modules of the monitor, and the package itself, import without Tango: tools
that only read recordings need no Tango installation, and the command-line tools stay
quick to start."""

from __future__ import annotations

import subprocess
import sys

import pytest

PURE = (
    "snapshot",
    "diff",
    "stats",
    "figures",
    "findings",
    "rules",
    "render",
    "jsonl",
    "poll",
    "metrics",
    "serve",
)


@pytest.mark.parametrize(
    "module", [*(f"milonga.monitor.{name}" for name in PURE), "milonga.monitor"]
)
def test_a_pure_module_imports_without_tango(module: str) -> None:
    check = (
        f"import sys, {module}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'tango'))"
    )

    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True, timeout=60
    )

    assert result.stdout.strip() == "[]", f"importing {module} imported {result.stdout}"


def test_the_package_still_offers_the_tango_edge_on_first_use() -> None:
    check = "import milonga.monitor as m; print(m.Collector.__module__, m.diff.__module__)"

    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True, timeout=60
    )

    assert result.stdout.split() == ["milonga.monitor.collector", "milonga.monitor.diff"]
