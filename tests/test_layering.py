"""Layering (issue 7): pure domains, contracts below the kit, a kit that names no service.

- Every ``services/*/domain.py`` and every pure kit module imports with nothing but the
  standard library and the project's own packages: each is imported in a fresh
  interpreter whose import system refuses anything else (nameko, SQLAlchemy,
  marshmallow, kombu, eventlet by name, and every other installed package).
- ``contracts/`` imports no service and, of the kit, only standard-library leaves
  (modules that import nothing of the project, so no cycle can form): the kit imports
  the contracts, never the other way round.
- No kit module names a service package (the service registry does that).
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Named in the house rules as what a domain must never pull in; the finder below refuses
# every other installed package too.
BLOCKED = ("nameko", "sqlalchemy", "marshmallow", "kombu", "eventlet")
# The kit's pure parts: what a domain may import from the kit.
PURE_KIT = (
    "kit.access",
    "kit.context",
    "kit.discussion",
    "kit.errors",
    "kit.ids",
    "kit.money",
    "kit.statemachine",
    "kit.text",
)
# Standard-library-only leaves of the kit (they import nothing from the project): the
# contracts may use them (money on the wire is kit.money's rule) without a cycle.
KIT_LEAVES = frozenset({"kit.money"})
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "__init__.py").is_file())
DOMAINS = sorted(
    f"services.{p.parent.name}.domain" for p in (ROOT / "services").glob("*/domain.py")
)
# What a contract module may import: pure schemas (the example subscriber under
# contracts/examples is an outside program and may use its own client, pika).
CONTRACT_IMPORTS = frozenset({"contracts", "marshmallow", "apispec"})

# Runs in a fresh interpreter: refuse every import that is neither the standard library
# nor the project's own (kit, services), import the module, report what it loaded.
_PROBE = """
import importlib, importlib.abc, importlib.machinery, json, os, sys, sysconfig

ALLOWED = {"kit", "services"}
STDLIB = tuple(
    os.path.join(os.path.realpath(sysconfig.get_paths()[key]), "")
    for key in ("stdlib", "platstdlib")
)


def in_stdlib(origin):
    origin = os.path.realpath(origin or "")
    return origin.startswith(STDLIB) and "-packages" not in origin


class OnlyStdlib(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in sys.stdlib_module_names or top in ALLOWED:
            return None
        # platform modules of the standard library (e.g. _sysconfigdata_*) by location
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and in_stdlib(spec.origin):
            return None
        raise ImportError(f"{name} is blocked: not the standard library")


def foreign(name):
    top = name.partition(".")[0]
    if top in sys.stdlib_module_names or top in ALLOWED:
        return False
    return not in_stdlib(getattr(sys.modules[name], "__file__", None))


before = set(sys.modules)
preloaded = sorted(m for m in before if m.partition(".")[0] in BLOCKED)
sys.meta_path.insert(0, OnlyStdlib())
try:
    importlib.import_module(TARGET)
    error = None
except ImportError as exc:
    error = f"{type(exc).__name__}: {exc}"
loaded = sorted(set(sys.modules) - before)
still_blocked = []
for name in BLOCKED:
    try:
        importlib.import_module(name)
    except ImportError:
        still_blocked.append(name)
print(json.dumps({
    "error": error,
    "preloaded": preloaded,
    "still_blocked": still_blocked,
    "foreign": [m for m in loaded if foreign(m)],
}))
"""


def _probe(module: str) -> dict[str, object]:
    code = f"BLOCKED = {BLOCKED!r}\nTARGET = {module!r}\n{_PROBE}"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_there_are_domains_to_check() -> None:
    assert {"services.gateway.domain", "services.notify.domain", "services.quotes.domain"} <= set(
        DOMAINS
    )


@pytest.mark.parametrize("module", [*DOMAINS, *PURE_KIT])
def test_imports_with_only_the_standard_library(module: str) -> None:
    result = _probe(module)
    assert result["preloaded"] == [], "a blocked package was loaded before the probe"
    assert result["error"] is None, f"{module}: {result['error']}"
    assert result["foreign"] == []
    # the finder really refused them all along (nothing slipped in by being cached)
    assert result["still_blocked"] == list(BLOCKED)


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    """Every absolute module an import statement names, at any depth of the file."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def _parsed(folder: str) -> list[tuple[str, ast.AST]]:
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files
    return [(str(f.relative_to(ROOT)), ast.parse(f.read_text(), str(f))) for f in files]


def test_contracts_import_neither_the_kit_nor_a_service() -> None:
    wrong = [
        f"{path}:{line} imports {name}"
        for path, tree in _parsed("contracts")
        for line, name in _imports(tree)
        if name.partition(".")[0] in ("kit", "services") and name not in KIT_LEAVES
    ]
    assert wrong == []


@pytest.mark.parametrize("module", sorted(KIT_LEAVES))
def test_kit_leaves_the_contracts_use_import_only_the_standard_library(module: str) -> None:
    path = ROOT / f"{module.replace('.', '/')}.py"
    names = [name for _, name in _imports(ast.parse(path.read_text(), str(path)))]
    assert names and [n for n in names if n.partition(".")[0] not in sys.stdlib_module_names] == []


def test_contracts_are_pure_schemas() -> None:
    wrong = [
        f"{path}:{line} imports {name}"
        for path, tree in _parsed("contracts")
        if not path.startswith("contracts/examples/")
        for line, name in _imports(tree)
        if name.partition(".")[0] not in sys.stdlib_module_names | CONTRACT_IMPORTS
        and name not in KIT_LEAVES
    ]
    assert wrong == []


def _names_a_service(tree: ast.AST) -> list[str]:
    """Imports of a service package, and strings that name one (``"quotes"``,
    ``"services.quotes.service:..."``, ``"services/quotes/..."``)."""
    in_text = re.compile(rf"\bservices[./]({'|'.join(map(re.escape, SERVICES))})\b")
    found = [
        f"{line}: import {name}"
        for line, name in _imports(tree)
        if in_text.match(name) or name == "services"
    ]
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and (node.value in SERVICES or in_text.search(node.value))
        ):
            found.append(f"{node.lineno}: {node.value[:60]!r}")
    return found


def test_the_kit_names_no_service() -> None:
    naming = {
        path: found
        for path, tree in _parsed("kit")
        if not path.startswith("kit/tests/") and (found := _names_a_service(tree))
    }
    assert naming == {}


def test_the_service_check_sees_a_service_named() -> None:
    # the check is not vacuous: the forms it must catch are caught
    tree = ast.parse(
        "import services.quotes.service\n"
        "from services.notify import domain\n"
        "ENTRY = 'services.gateway.service:GatewayService'\n"
        "NAMES = ('quotes',)\n"
        "REGISTRY = 'services.registry'\n"
        "import services\n"
    )
    assert sorted(f.split(":")[0] for f in _names_a_service(tree)) == ["1", "2", "3", "4", "6"]


@pytest.mark.parametrize(("module", "blocked"), [("kit.schemas", "marshmallow"), ("kit.db", "")])
def test_the_probe_refuses_what_is_not_pure(module: str, blocked: str) -> None:
    # the probe is not vacuous: kit modules built on third-party packages fail it
    error = _probe(module)["error"]
    assert isinstance(error, str) and "is blocked" in error and blocked in error
