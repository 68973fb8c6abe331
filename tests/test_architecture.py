"""The package's layering (docs/architecture.md): services talk through ``core``, never through each other.

Walks every module's imports (``ast``, so nothing is imported) and fails on a service importing another
service's package, or ``core`` importing anything above it.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "services" / "edgecloud"

CORE = "core"
SERVICES = frozenset({"gateway", "decision", "llmsim", "channel"})
"""The four HTTP services: each imports ``core`` (and libraries), never another service."""
LIBRARIES = frozenset({"classifier"})
"""Plain libraries a service may use; they import ``core`` only."""
TOOLS = frozenset({"loadgen", "testbed"})
"""Clients and the process supervisor: they speak to the services over HTTP, so they import ``core`` only."""
COMPOSERS = frozenset({"experiments"})
"""The virtual-time runner reuses the services' plain libraries in one process, by design."""
ALLOWED: dict[str, frozenset[str]] = {
    CORE: frozenset(),
    **{library: frozenset({CORE}) for library in LIBRARIES},
    **{tool: frozenset({CORE}) for tool in TOOLS},
    **{service: frozenset({CORE}) | LIBRARIES for service in SERVICES},
    **{composer: frozenset({CORE}) | LIBRARIES | SERVICES | TOOLS for composer in COMPOSERS},
}


def _subpackage(module: str) -> str | None:
    """``edgecloud.gateway.service`` -> ``gateway``; None for modules outside the package."""
    parts = module.split(".")
    return parts[1] if parts[0] == "edgecloud" and len(parts) > 1 else None


def _imports(path: Path) -> list[tuple[int, str]]:
    """The absolute ``edgecloud.*`` modules a file imports, with line numbers (relative imports resolved)."""
    package = ["edgecloud", *path.relative_to(PACKAGE).parent.parts]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                found.append((node.lineno, ".".join([*base, *([node.module] if node.module else [])])))
            elif node.module:
                found.append((node.lineno, node.module))
    return found


def _violations() -> list[str]:
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        owner = path.relative_to(PACKAGE).parts[0]
        if owner not in ALLOWED:
            continue
        for line, module in _imports(path):
            imported = _subpackage(module)
            if imported is None or imported == owner or imported in ALLOWED[owner]:
                continue
            violations.append(f"{path.relative_to(PACKAGE)}:{line} ({owner}) imports {module}")
    return violations


def test_every_subpackage_has_a_place_in_the_layering() -> None:
    subpackages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    assert subpackages == set(ALLOWED), "a new subpackage: give it a layer here and in docs/architecture.md"


def test_services_talk_through_core_only() -> None:
    assert _violations() == []


def test_the_walk_finds_a_service_importing_another(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check itself catches what it is for: absolute and relative imports across services."""
    fake = tmp_path / "edgecloud"
    for name in ALLOWED:
        (fake / name).mkdir(parents=True)
        (fake / name / "__init__.py").write_text("")
    (fake / "channel" / "service.py").write_text("from edgecloud.gateway.settings import Route\n")
    (fake / "loadgen" / "client.py").write_text("from ..decision import keywords\n")
    (fake / "gateway" / "service.py").write_text("from edgecloud.core import headers\nfrom ..classifier import x\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert _violations() == [
        "channel/service.py:1 (channel) imports edgecloud.gateway.settings",
        "loadgen/client.py:1 (loadgen) imports edgecloud.decision",
    ]
