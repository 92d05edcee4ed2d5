"""The service registry (services/registry.py) is the one list of services: config,
the runner, setup, `portico up`'s Procfile and the Kubernetes folders all follow it.
A throwaway service registered in a temporary registry shows up in each of them."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest
import yaml

from kit import registry
from kit.registry import RegistryError, Resources, Service
from portico import deployfiles, infra
from tests import kustomize

ROOT = Path(__file__).resolve().parent.parent
KIT_FILES = ("config.py", "runner.py", "migrate.py")


def test_kit_names_no_service() -> None:
    for name in KIT_FILES:
        text = (ROOT / "kit" / name).read_text()
        for service in registry.names():
            assert f'"{service}"' not in text, (name, service)


def test_registry_refuses_inconsistent_entries() -> None:
    gateway = Service("gateway", "a:B", 8080, public=True)
    with pytest.raises(RegistryError, match="names repeat"):
        registry.check([gateway, Service("gateway", "a:C", 8081)])
    with pytest.raises(RegistryError, match="ports repeat"):
        registry.check([gateway, Service("quotes", "a:C", 8080)])
    with pytest.raises(RegistryError, match="exactly one"):
        registry.check([Service("quotes", "a:C", 8081)])
    with pytest.raises(RegistryError, match="lowercase identifier"):
        registry.check([gateway, Service("work-orders", "a:C", 8081)])
    with pytest.raises(RegistryError, match="module:Class"):
        registry.check([gateway, Service("parts", "a.C", 8081)])
    with pytest.raises(RegistryError, match="replicas"):
        registry.check([gateway, Service("parts", "a:C", 8081, min_replicas=3, max_replicas=2)])


@pytest.fixture
def with_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Service:
    """A registry of today's services plus ``parts`` (its own class, port, replicas and
    resources), in a temporary module the kit is pointed at."""
    (tmp_path / "parts_service.py").write_text(
        textwrap.dedent(
            """
            class PartsService:
                name = "parts"
            """
        )
    )
    (tmp_path / "parts_registry.py").write_text(
        textwrap.dedent(
            """
            from kit.registry import Resources, Service
            from services.registry import SERVICES as TODAY

            SERVICES = (
                *TODAY,
                Service(
                    "parts", "parts_service:PartsService", port=8093, min_replicas=1,
                    max_replicas=4, resources=Resources(memory_limit="384Mi"),
                ),
            )
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "REGISTRY_MODULE", "parts_registry")
    monkeypatch.delenv("PORT", raising=False)
    return registry.get("parts")


def test_new_service_reaches_config_and_runner(with_parts: Service) -> None:
    from kit.config import read_settings
    from kit.runner import nameko_config, service_class

    assert registry.names()[-1] == "parts"
    assert read_settings({}).port("parts") == 8093
    assert read_settings({"PORT": "9000"}).port("parts") == 9000
    assert service_class("parts").__name__ == "PartsService"
    assert nameko_config("parts")["WEB_SERVER_ADDRESS"].endswith(":8093")


def test_new_service_is_migrated_by_setup(with_parts: Service) -> None:
    from kit.config import read_settings

    settings = read_settings({"PARTS_DB_PASSWORD": "p1", "PARTS_WORKER_DB_PASSWORD": "p2"})
    plan = infra.migration_plan(settings)
    assert [name for name, _, _ in plan] == [*registry.names()]
    assert plan[-1] == ("parts", "p1", "p2")


def test_new_service_is_in_the_procfile_with_its_port(with_parts: Service) -> None:
    lines = deployfiles.procfile().splitlines()
    assert lines[-1] == "parts: PORT=${PARTS_PORT:-8093} exec portico run parts"
    assert deployfiles.port_env()["PARTS_PORT"] == "8093"


def test_new_service_gets_its_kubernetes_folder(with_parts: Service, tmp_path: Path) -> None:
    """`python -m portico.deployfiles --write`, one line in deploy/k8s/kustomization.yaml,
    and the rendered tree runs the new service like the others."""
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "deploy", root / "deploy")
    written = deployfiles.write(root=root)
    assert root / "deploy" / "k8s" / "services" / "parts" / "deployment.yaml" in written
    assert (root / "deploy" / "Procfile").read_text() == deployfiles.procfile()
    top = root / "deploy" / "k8s" / "kustomization.yaml"
    k = yaml.safe_load(top.read_text())
    k["resources"].append("services/parts")
    top.write_text(yaml.safe_dump(k))

    docs = kustomize.render(root / "deploy" / "k8s")
    by_id = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    deployment = by_id[("Deployment", "portico-parts")]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["run", "parts"]
    assert container["ports"][0]["containerPort"] == 8093
    assert {"name": "PORT", "value": "8093"} in container["env"]
    assert {"secretRef": {"name": "portico-parts"}} in container["envFrom"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "384Mi"}
    assert deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "parts"
    hpa = by_id[("HorizontalPodAutoscaler", "portico-parts")]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "portico-parts"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)
    pdb = by_id[("PodDisruptionBudget", "portico-parts")]
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "parts"
    # The services that were there render as before.
    for name in registry.names()[:-1]:
        assert ("Deployment", f"portico-{name}") in by_id
    assert Resources() == registry.get("quotes").resources
