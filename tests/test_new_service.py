"""`portico new-service NAME` in a copy of the repository: the generated skeleton lints,
type-checks and passes its own tests, and the repository's registry, deployment,
layering and event-catalogue tests pass with it present (so config, the Procfile,
Kubernetes, compose and the catalogue all pick it up). Refused names and a file the
edits cannot place themselves in write nothing."""

from __future__ import annotations

import difflib
import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from portico import newservice

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
NAME = "inspections"
# Generated outside domain.py and models.py: what a new service's author reads first.
SKELETON = (
    f"services/{NAME}/service.py",
    f"services/{NAME}/store.py",
    f"contracts/{NAME}.py",
    f"services/{NAME}/migrations/env.py",
)
EDITED = ("services/registry.py", "contracts/events.py")
REPO_TESTS = (
    "tests/test_registry.py",
    "tests/test_deploy.py",
    "tests/test_layering.py",
    "tests/test_event_catalogue.py",
)


@dataclass
class Copy:
    root: Path
    original: dict[str, str] = field(default_factory=dict)
    refusals: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)
    unchanged_after_refusals: bool = False
    generated: subprocess.CompletedProcess[str] | None = None
    mypy: subprocess.CompletedProcess[str] | None = None
    pytest: subprocess.CompletedProcess[str] | None = None


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}


def _run(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=root, env=_env(root), capture_output=True, text=True, timeout=120
    )


def _portico(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _run(root, sys.executable, "-m", "portico.cli", *args)


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def _copy_repository(dest: Path) -> None:
    """Tracked files and untracked ones not ignored (others' work in progress), as they
    are in the working tree; no .venv."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes(source.read_bytes())


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Copy:
    root = tmp_path_factory.mktemp("repo")
    _copy_repository(root)
    found = Copy(root, {p: (root / p).read_text() for p in EDITED})
    before = _snapshot(root)
    for bad in ("Parts", "work_orders", "class", "quotes", "kit"):
        found.refusals[bad] = _portico(root, "new-service", bad)
    # A hand-kept file the edits cannot find their place in: refused before any write.
    compose = root / "deploy" / "compose.yaml"
    text = compose.read_text()
    compose.write_text(text.replace("\nvolumes:\n", "\nvolumes_renamed:\n"))
    found.refusals["no anchor"] = _portico(root, "new-service", NAME)
    compose.write_text(text)
    found.unchanged_after_refusals = _snapshot(root) == before

    found.generated = _portico(root, "new-service", NAME)
    # The two slow checks run side by side.
    mypy = subprocess.Popen(
        [str(BIN / "mypy"), "--cache-dir", str(root / ".mypy_cache"), f"services/{NAME}"]
        + [f"contracts/{NAME}.py"],
        cwd=root,
        env=_env(root),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    found.pytest = _run(
        root,
        sys.executable,
        "-m",
        "pytest",
        "-v",
        "-p",
        "no:cacheprovider",
        f"services/{NAME}/tests",
        *REPO_TESTS,
    )
    out, _ = mypy.communicate(timeout=120)
    found.mypy = subprocess.CompletedProcess(mypy.args, mypy.returncode, out, "")
    return found


def _generated_python(root: Path) -> list[str]:
    files = [str(p.relative_to(root)) for p in (root / "services" / NAME).rglob("*.py")]
    return sorted([*files, f"contracts/{NAME}.py", *EDITED])


def test_refusals_are_one_line_and_write_nothing(copy: Copy) -> None:
    for bad, done in copy.refusals.items():
        assert done.returncode == 2, (bad, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("portico: new-service: "), bad
        assert done.stdout == "", bad
    assert "reserved" in copy.refusals["class"].stderr
    assert "already a registered service" in copy.refusals["quotes"].stderr
    assert "deploy/compose.yaml" in copy.refusals["no anchor"].stderr
    assert copy.unchanged_after_refusals


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "not a service name"),
        ("Parts", "not a service name"),
        ("2parts", "not a service name"),
        ("work-orders", "not a service name"),
        ("work_orders", "no '_'"),
        ("x" * 21, "longer than"),
        ("match", "reserved"),
        ("setup", "reserved"),
        ("common", "reserved"),
        ("notify", "already a registered service"),
        (NAME, "already a registered service"),
    ],
)
def test_check_name_refuses(copy: Copy, name: str, why: str) -> None:
    with pytest.raises(newservice.NewServiceError, match=why):
        newservice.check_name(name, copy.root)


def test_generator_reports_what_it_wrote(copy: Copy) -> None:
    assert copy.generated is not None
    assert copy.generated.returncode == 0, copy.generated.stderr
    written = {str(Path(p).relative_to(copy.root)) for p in copy.generated.stdout.split()}
    assert {
        f"services/{NAME}/domain.py",
        f"services/{NAME}/migrations/versions/0001_{NAME}.py",
        f"deploy/k8s/services/{NAME}/deployment.yaml",
        "deploy/Procfile",
        "deploy/compose.yaml",
        "deploy/k8s/secrets.example.yaml",
        "deploy/k8s/kustomization.yaml",
        *EDITED,
    } <= written


def test_generated_code_is_linted_and_formatted(copy: Copy) -> None:
    files = _generated_python(copy.root)
    for argv in (["check"], ["format", "--check"]):
        done = _run(copy.root, str(BIN / "ruff"), *argv, *files)
        assert done.returncode == 0, done.stdout + done.stderr


def test_generated_code_type_checks(copy: Copy) -> None:
    assert copy.mypy is not None
    assert copy.mypy.returncode == 0, copy.mypy.stdout


def test_domain_tests_and_repository_tests_pass_with_the_new_service(copy: Copy) -> None:
    assert copy.pytest is not None
    out = copy.pytest.stdout
    assert copy.pytest.returncode == 0, out[-5000:]
    ran = [line for line in out.splitlines() if " PASSED" in line]
    assert any(line.startswith(f"services/{NAME}/tests/test_domain.py::") for line in ran)
    # The repository's checks saw the service (their parameters come from the registry).
    for check in (
        f"test_compose_app_service[{NAME}]",
        f"test_k8s_deployment_runs_service_with_probes[{NAME}]",
        f"test_k8s_internal_service_folder_is_generated_from_the_registry[{NAME}]",
        f"test_imports_with_only_the_standard_library[services.{NAME}.domain]",
    ):
        assert any(check in line for line in ran), check


def test_skeleton_outside_domain_and_models_is_under_150_lines(copy: Copy) -> None:
    lines = sum(len((copy.root / p).read_text().splitlines()) for p in SKELETON)
    for path in EDITED:
        diff = difflib.ndiff(
            copy.original[path].splitlines(), (copy.root / path).read_text().splitlines()
        )
        lines += sum(1 for line in diff if line.startswith("+ "))
    assert lines < 150, lines


def test_longest_name_keeps_hand_kept_files_formatted(copy: Copy, tmp_path: Path) -> None:
    """The registry entry and the events registration of a name of the longest allowed
    length are laid out as `ruff format` would."""
    files = newservice.plan("x" * newservice.MAX_NAME, copy.root)
    for path in EDITED:
        (tmp_path / Path(path).name).write_text(files[copy.root / path])
    config = str(copy.root / "pyproject.toml")
    done = _run(copy.root, str(BIN / "ruff"), "format", "--config", config, "--diff", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr


def test_generated_tests_build_their_callers_with_the_shared_factories(copy: Copy) -> None:
    """A new service's tests take their actors from tests/factories.py, like every
    service's, instead of building :class:`kit.context.Actor` themselves."""
    text = (copy.root / "services" / NAME / "tests" / "test_domain.py").read_text()
    assert "from tests import factories" in text
    assert "Actor(" not in text
