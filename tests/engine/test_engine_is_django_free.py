"""The engine package is a library: importing all of it must not import Django."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROGRAM = """
import importlib, pkgutil, sys
import inference.engine as package
for module in pkgutil.iter_modules(package.__path__):
    importlib.import_module(f"inference.engine.{module.name}")
assert "django" not in sys.modules, sorted(m for m in sys.modules if m.startswith("django"))
print("ok", len(list(pkgutil.iter_modules(package.__path__))))
"""


def test_the_engine_package_imports_nothing_from_django():
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")
