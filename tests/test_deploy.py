"""Static checks of the deployment files under deploy/ (no Docker, no cluster)."""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from kit import registry
from portico import deployfiles
from tests import kustomize

SERVICES = registry.names()
DEFAULT_PORT = {s.name: s.port for s in registry.registered()}
PUBLIC = registry.public().name
INTERNAL = tuple(s.name for s in registry.registered() if not s.public)

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
# Applied by hand, on purpose not in the kustomization (see its comment).
K8S_UNLISTED = ("secrets.example.yaml", "setup-job.yaml")
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
NAMESPACE = "portico"
BLOB_DIR = "/var/lib/portico/blobs"
INFRA = ("postgres", "rabbitmq")
CLUSTER_SCOPED = {"Namespace"}

# A PEM private key header followed by what looks like a real base64 body
# (newlines may be literal or escaped as \n inside JSON strings).
PRIVATE_KEY_RE = re.compile(
    r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----(?:\s|\\n)*[A-Za-z0-9+/]{40,}",
)

YAML_FILES = sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml"})


def _load(path: Path) -> list:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _k8s_docs() -> list[tuple[Path, dict]]:
    """What `kubectl apply -k deploy/k8s` applies, plus the Secrets and the setup Job."""
    rendered = [(K8S, doc) for doc in kustomize.render(K8S)]
    return rendered + [(K8S / name, doc) for name in K8S_UNLISTED for doc in _load(K8S / name)]


def _of_kind(kind: str) -> list[dict]:
    return [doc for _, doc in _k8s_docs() if doc.get("kind") == kind]


def _pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def _runs(container: dict, *words: str) -> bool:
    argv = list(container.get("command", ["portico"])) + list(container.get("args", []))
    return argv == ["portico", *words]


def _deployment(service: str) -> dict:
    matches = [
        d
        for d in _of_kind("Deployment")
        if any(_runs(c, "run", service) for c in _pod_spec(d)["containers"])
    ]
    assert len(matches) == 1, f"expected one Deployment running {service}, got {len(matches)}"
    return matches[0]


def _container(service: str) -> dict:
    (container,) = [
        c for c in _pod_spec(_deployment(service))["containers"] if _runs(c, "run", service)
    ]
    return container


def _port_matches(container: dict, port: int | str) -> bool:
    return any(port in (p["containerPort"], p.get("name")) for p in container["ports"])


def _labels_match(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _env_names(container: dict) -> set[str]:
    return {e["name"] for e in container.get("env", [])}


def _secret(name: str) -> dict:
    (secret,) = [s for s in _of_kind("Secret") if s["metadata"]["name"] == name]
    return secret


def _secret_values(secret: dict) -> dict[str, str]:
    values = dict(secret.get("stringData") or {})
    for key, value in (secret.get("data") or {}).items():
        values[key] = base64.b64decode(value).decode("utf-8", "replace")
    return values


def _env_from(container: dict) -> tuple[set[str], set[str]]:
    config_maps = {e["configMapRef"]["name"] for e in container["envFrom"] if "configMapRef" in e}
    secrets = {e["secretRef"]["name"] for e in container["envFrom"] if "secretRef" in e}
    return config_maps, secrets


# ---------------------------------------------------------------- all YAML ---


def test_deploy_tree_has_yaml_files() -> None:
    assert COMPOSE in YAML_FILES
    assert {p.relative_to(K8S).as_posix() for p in YAML_FILES if K8S in p.parents} >= {
        "kustomization.yaml",
        "namespace.yaml",
        "configmap.yaml",
        "secrets.example.yaml",
        "setup-job.yaml",
        "base/kustomization.yaml",
        "base/deployment.yaml",
        "base/hpa.yaml",
        "base/pdb.yaml",
        *(f"services/{s}/kustomization.yaml" for s in SERVICES),
        *(f"services/{s}/deployment.yaml" for s in SERVICES),
    }


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses(path: Path) -> None:
    docs = _load(path)
    assert docs, f"{path} holds no YAML document"
    for doc in docs:
        assert isinstance(doc, dict)


# ----------------------------------------------------------------- compose ---


def test_compose_names_every_service() -> None:
    names = set(_compose()["services"])
    assert names >= {*SERVICES, "setup", *INFRA}


def test_compose_infra_healthchecks_volumes_and_local_ports() -> None:
    services = _compose()["services"]
    expected_ports = {"postgres": "127.0.0.1:5432:5432", "rabbitmq": "127.0.0.1:5672:5672"}
    for name in INFRA:
        svc = services[name]
        assert svc["healthcheck"]["test"], name
        assert svc["volumes"], name
        assert expected_ports[name] in svc["ports"], name
        for port in svc["ports"]:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond localhost"
    assert services["postgres"]["image"] == "postgres:16"
    assert services["rabbitmq"]["image"] == "rabbitmq:3.13-management"
    assert services["mailpit"]["image"].startswith("axllent/mailpit")


def test_compose_setup_is_one_shot_after_healthy_infra() -> None:
    setup = _compose()["services"]["setup"]
    assert setup["command"] == ["setup"]
    assert setup.get("restart") == "no"
    for name in INFRA:
        assert setup["depends_on"][name]["condition"] == "service_healthy"
    assert setup["environment"]["ADMIN_DATABASE_URL"].startswith("postgresql://")
    assert setup["environment"]["AMQP_URI"].startswith("amqp://")


@pytest.mark.parametrize("service", SERVICES)
def test_compose_app_service(service: str) -> None:
    compose = _compose()
    svc = compose["services"][service]
    assert svc["command"] == ["run", service]
    assert svc["depends_on"]["setup"]["condition"] == "service_completed_successfully"
    assert svc["healthcheck"]["test"]
    assert "/healthz" in " ".join(svc["healthcheck"]["test"])
    env = svc["environment"]
    assert env["PORTICO_ENV"] == "production"
    assert env["PORT"] == str(DEFAULT_PORT[service])
    assert env["AMQP_URI"].startswith("amqp://")
    assert env["DATABASE_URL"].startswith(f"postgresql://portico_{service}:")
    assert "ADMIN_DATABASE_URL" not in env, "only setup may use the owner role"
    # Every Portico process runs the one image the setup step runs.
    assert svc["image"] == compose["services"]["setup"]["image"]
    assert svc["build"] == compose["services"]["setup"]["build"]


@pytest.mark.parametrize("service", SERVICES)
def test_compose_setup_gives_each_service_role_its_password(service: str) -> None:
    """setup creates portico_<service> with <SERVICE>_DB_PASSWORD; the service logs in
    with it (a service added to the registry needs both lines)."""
    from urllib.parse import urlsplit

    compose = _compose()["services"]
    password = compose["setup"]["environment"][f"{registry.get(service).env_prefix}_DB_PASSWORD"]
    url = urlsplit(compose[service]["environment"]["DATABASE_URL"])
    assert (url.username, url.password) == (f"portico_{service}", password)


def test_compose_builds_with_deploy_dockerfile_from_repo_root() -> None:
    build = _compose()["services"]["setup"]["build"]
    assert (COMPOSE.parent / build["context"]).resolve() == ROOT
    assert (ROOT / build["dockerfile"]).resolve() == DOCKERFILE


def test_compose_gateway_published_with_blob_volume() -> None:
    gateway = _compose()["services"]["gateway"]
    assert any(str(p).endswith("8080:8080") for p in gateway["ports"])
    assert gateway["environment"]["BLOB_DIR"] == BLOB_DIR
    assert any(str(v).endswith(f":{BLOB_DIR}") for v in gateway["volumes"])
    assert {"JWT_PRIVATE_KEYS", "JWT_ACTIVE_KID"} <= set(gateway["environment"])


def test_compose_notify_sends_mail_to_mailpit() -> None:
    env = _compose()["services"]["notify"]["environment"]
    assert env["SMTP_HOST"] == "mailpit"
    assert env["SMTP_PORT"] == "1025"


# -------------------------------------------------------------- kubernetes ---


def test_k8s_namespaced_resources_live_in_portico_namespace() -> None:
    (namespace,) = _of_kind("Namespace")
    assert namespace["metadata"]["name"] == NAMESPACE
    for path, doc in _k8s_docs():
        if doc["kind"] in CLUSTER_SCOPED or doc["kind"] == "Kustomization":
            continue
        assert doc["metadata"].get("namespace") == NAMESPACE, f"{path.name}: {doc['kind']}"


@pytest.mark.parametrize("service", SERVICES)
def test_k8s_deployment_runs_service_with_probes(service: str) -> None:
    container = _container(service)
    port = DEFAULT_PORT[service]
    assert _port_matches(container, port)
    assert {"name": "PORT", "value": str(port)} in container["env"]
    probes = {
        "readinessProbe": "/readyz",
        "livenessProbe": "/healthz",
        "startupProbe": "/healthz",
    }
    for probe, path in probes.items():
        http = container[probe]["httpGet"]
        assert http["path"] == path, probe
        assert _port_matches(container, http["port"]), probe


@pytest.mark.parametrize("service", SERVICES)
def test_k8s_deployment_resources(service: str) -> None:
    resources = _container(service)["resources"]
    wanted = registry.get(service).resources
    assert resources["requests"] == {"cpu": wanted.cpu_request, "memory": wanted.memory_request}
    assert resources["limits"] == {"cpu": wanted.cpu_limit, "memory": wanted.memory_limit}
    assert (wanted.cpu_request, wanted.memory_request) == ("100m", "96Mi")
    assert (wanted.cpu_limit, wanted.memory_limit) == ("1", "256Mi")


@pytest.mark.parametrize("service", SERVICES)
def test_k8s_deployment_security(service: str) -> None:
    deployment = _deployment(service)
    pod = _pod_spec(deployment)
    container = _container(service)
    pod_ctx = pod.get("securityContext", {})
    ctx = container.get("securityContext", {})
    assert ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is True
    assert ctx.get("runAsUser", pod_ctx.get("runAsUser", 1)) != 0
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    volumes = {v["name"]: v for v in pod["volumes"]}
    (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert "emptyDir" in volumes[tmp["name"]]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _labels_match(deployment["spec"]["selector"]["matchLabels"], labels)


@pytest.mark.parametrize("service", SERVICES)
def test_k8s_deployment_env_from_config_and_own_secret(service: str) -> None:
    config_maps, secrets = _env_from(_container(service))
    assert config_maps == {"portico-config"}
    assert secrets == {f"portico-{service}"}
    values = _secret_values(_secret(f"portico-{service}"))
    assert values["DATABASE_URL"].startswith(f"postgresql://portico_{service}:")
    assert values["AMQP_URI"].startswith("amqp://")
    assert "ADMIN_DATABASE_URL" not in values


def test_k8s_jwt_and_smtp_secrets_go_to_their_service_only() -> None:
    gateway = _secret_values(_secret("portico-gateway"))
    assert {"JWT_PRIVATE_KEYS", "JWT_ACTIVE_KID"} <= set(gateway)
    assert isinstance(json.loads(gateway["JWT_PRIVATE_KEYS"]), dict)
    notify = _secret_values(_secret("portico-notify"))
    assert {"SMTP_USERNAME", "SMTP_PASSWORD", "SMS_HTTP_TOKEN"} <= set(notify)
    for service in SERVICES:
        values = _secret_values(_secret(f"portico-{service}"))
        if service != "gateway":
            assert "JWT_PRIVATE_KEYS" not in values
        if service != "notify":
            assert "SMTP_PASSWORD" not in values


def test_k8s_configmap_holds_no_secrets() -> None:
    (config,) = _of_kind("ConfigMap")
    data = config["data"]
    assert data["PORTICO_ENV"] == "production"
    assert data["BLOB_DIR"] == BLOB_DIR
    secret_keys = {
        "DATABASE_URL",
        "ADMIN_DATABASE_URL",
        "AMQP_URI",
        "JWT_PRIVATE_KEYS",
        "JWT_ACTIVE_KID",
        "SMTP_USERNAME",
        "SMTP_PASSWORD",
        "SMS_HTTP_TOKEN",
        "AMQP_ADMIN_URI",
        "AMQP_OPERATOR_URI",
        "RABBITMQ_MANAGEMENT_URL",
        "AMQP_SERVICES_PASSWORD",
        "AMQP_OPERATOR_PASSWORD",
    }
    assert not secret_keys & set(data)


@pytest.mark.parametrize("service", SERVICES)
def test_k8s_hpa_and_pdb_target_deployment(service: str) -> None:
    deployment = _deployment(service)
    name = deployment["metadata"]["name"]
    hpas = [
        h
        for h in _of_kind("HorizontalPodAutoscaler")
        if h["spec"]["scaleTargetRef"]["kind"] == "Deployment"
        and h["spec"]["scaleTargetRef"]["name"] == name
    ]
    assert len(hpas) == 1
    (hpa,) = hpas
    assert hpa["apiVersion"] == "autoscaling/v2"
    entry = registry.get(service)
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (
        entry.min_replicas,
        entry.max_replicas,
    )
    assert (entry.min_replicas, entry.max_replicas) == (2, 10)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    pdbs = [
        p
        for p in _of_kind("PodDisruptionBudget")
        if _labels_match(p["spec"]["selector"]["matchLabels"], labels)
    ]
    assert len(pdbs) == 1


def test_k8s_gateway_service_and_ingress() -> None:
    deployment = _deployment("gateway")
    container = _container("gateway")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    services = [s for s in _of_kind("Service") if _labels_match(s["spec"]["selector"], labels)]
    assert len(services) == 1
    (service,) = services
    (port,) = service["spec"]["ports"]
    assert port["port"] == 80
    assert _port_matches(container, port["targetPort"])
    (ingress,) = _of_kind("Ingress")
    assert ingress["apiVersion"] == "networking.k8s.io/v1"
    assert ingress["spec"]["tls"][0]["secretName"]
    backends = [
        path["backend"]["service"]
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]
    assert backends
    for backend in backends:
        assert backend["name"] == service["metadata"]["name"]
        assert backend["port"].get("name") == port["name"] or backend["port"].get("number") == 80
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            assert path["path"] not in {"/metrics", "/healthz", "/readyz"}


def test_k8s_gateway_counts_the_ingress_as_one_trusted_proxy_hop() -> None:
    """Behind the Ingress every client shares the controller's address: the gateway must
    read the client from X-Forwarded-For, one trusted hop from the right (issue 6 item 7)."""
    from services.gateway.domain import trusted_proxy_hops

    assert _of_kind("Ingress"), "no Ingress: the gateway would see clients directly"
    env = {e["name"]: e.get("value") for e in _container("gateway").get("env", [])}
    assert "TRUST_FORWARDED_FOR" not in env  # the old setting took the client's leftmost entry
    assert trusted_proxy_hops(env) == 1
    for service in INTERNAL:  # not behind the Ingress: nothing to trust
        names = {e["name"] for e in _container(service).get("env", [])}
        assert "TRUSTED_PROXY_HOPS" not in names


# ------------------------------------------------------------ broker accounts ---
# Issue 6 item 2: only setup holds the RabbitMQ administrator; services connect as the
# services' account (<AMQP_USER_PREFIX>services) that setup creates with its password.
BROKER_ADMIN_KEYS = {
    "AMQP_ADMIN_URI",
    "RABBITMQ_MANAGEMENT_URL",
    "AMQP_SERVICES_PASSWORD",
    "AMQP_OPERATOR_PASSWORD",
}


def _amqp_login(uri: str) -> tuple[str, str]:
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(uri)
    return unquote(parts.username or ""), unquote(parts.password or "")


def test_compose_services_use_the_services_broker_account() -> None:
    services = _compose()["services"]
    setup = services["setup"]["environment"]
    assert set(setup) >= BROKER_ADMIN_KEYS
    admin_user, _ = _amqp_login(setup["AMQP_ADMIN_URI"])
    prefix = setup.get("AMQP_USER_PREFIX", "portico-")
    for service in SERVICES:
        env = services[service]["environment"]
        assert not BROKER_ADMIN_KEYS & set(env), service
        user, password = _amqp_login(env["AMQP_URI"])
        assert user == f"{prefix}services" != admin_user
        assert password == setup["AMQP_SERVICES_PASSWORD"]


def test_k8s_services_use_the_services_broker_account() -> None:
    (config,) = _of_kind("ConfigMap")
    prefix = config["data"].get("AMQP_USER_PREFIX", "portico-")
    setup = _secret_values(_secret("portico-setup"))
    assert set(setup) >= BROKER_ADMIN_KEYS
    assert "AMQP_URI" not in setup  # derived from the admin URI's host and the password
    for service in SERVICES:
        values = _secret_values(_secret(f"portico-{service}"))
        assert not BROKER_ADMIN_KEYS & set(values), service
        user, password = _amqp_login(values["AMQP_URI"])
        assert user == f"{prefix}services"
        assert password == setup["AMQP_SERVICES_PASSWORD"]
    operator = _secret_values(_secret("portico-operator"))
    user, password = _amqp_login(operator["AMQP_OPERATOR_URI"])
    assert (user, password) == (f"{prefix}operator", setup["AMQP_OPERATOR_PASSWORD"])
    assert set(operator) == {"AMQP_OPERATOR_URI"}


def test_k8s_only_gateway_is_exposed() -> None:
    gateway_labels = _deployment("gateway")["spec"]["template"]["metadata"]["labels"]
    for service in _of_kind("Service"):
        assert _labels_match(service["spec"]["selector"], gateway_labels)


@pytest.mark.parametrize("service", [s.name for s in registry.registered()])
def test_k8s_blob_volume_is_the_shared_pvc_where_the_registry_says(service: str) -> None:
    """Every service the registry gives the blob store mounts the one RWX claim (read-only
    where it only reads); the others mount nothing there."""
    wanted = registry.get(service).blobs
    pod = _pod_spec(_deployment(service))
    mounts = [m for m in _container(service).get("volumeMounts", []) if m["mountPath"] == BLOB_DIR]
    if wanted is None:
        assert not mounts
        return
    (mount,) = mounts
    assert bool(mount.get("readOnly")) is (wanted == "ro")
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    claim = volume["persistentVolumeClaim"]["claimName"]
    (pvc,) = [p for p in _of_kind("PersistentVolumeClaim") if p["metadata"]["name"] == claim]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"]


@pytest.mark.parametrize("service", [s.name for s in registry.registered() if s.blobs])
def test_compose_mounts_the_blob_volume_where_the_registry_says(service: str) -> None:
    svc = _compose()["services"][service]
    (volume,) = [str(v) for v in svc["volumes"] if f":{BLOB_DIR}" in str(v)]
    assert volume.endswith(":ro") is (registry.get(service).blobs == "ro")
    assert svc["environment"]["BLOB_DIR"] == BLOB_DIR


def test_k8s_setup_job_runs_portico_setup() -> None:
    (job,) = _of_kind("Job")
    pod = _pod_spec(job)
    (container,) = pod["containers"]
    assert _runs(container, "setup")
    assert pod["restartPolicy"] in {"Never", "OnFailure"}
    ctx = container["securityContext"]
    assert ctx.get("runAsNonRoot", pod.get("securityContext", {}).get("runAsNonRoot")) is True
    _, secrets = _env_from(container)
    (secret_name,) = secrets
    assert "ADMIN_DATABASE_URL" in _secret_values(_secret(secret_name))


def test_k8s_every_workload_uses_the_same_image() -> None:
    workloads = [*_of_kind("Deployment"), *_of_kind("Job")]
    images = {c["image"] for w in workloads for c in _pod_spec(w)["containers"]}
    assert len(images) == 1, images


def test_k8s_kustomization_lists_existing_files_but_not_placeholders() -> None:
    (kustomization,) = _load(K8S / "kustomization.yaml")
    resources = kustomization["resources"]
    for resource in resources:
        assert (K8S / resource).is_file() or (K8S / resource / "kustomization.yaml").is_file()
    assert not set(K8S_UNLISTED) & set(resources)
    # Every registered service, and nothing else, has its folder listed.
    folders = {r.removeprefix("services/") for r in resources if r.startswith("services/")}
    assert folders == set(SERVICES)
    assert {p.name for p in (K8S / "services").iterdir()} == set(SERVICES)


@pytest.mark.parametrize("service", SERVICES)
def test_k8s_service_folder_is_the_base_with_a_patch(service: str) -> None:
    k = kustomize.kustomization(K8S / "services" / service)
    assert k["resources"][0] == "../../base"
    assert k["nameSuffix"] == f"-{service}"
    assert k["labels"] == [
        {"pairs": {"app.kubernetes.io/component": service}, "includeSelectors": True}
    ]
    (patch,) = k["patches"]
    (doc,) = _load(K8S / "services" / service / patch["path"])
    assert (doc["kind"], doc["metadata"]["name"]) == ("Deployment", "portico")  # the base's
    assert not (K8S / "services" / service / "hpa.yaml").exists()


@pytest.mark.parametrize("service", INTERNAL)
def test_k8s_internal_service_folder_is_generated_from_the_registry(service: str) -> None:
    """Non-public services' folders are exactly what `python -m portico.deployfiles --write`
    writes from services/registry.py (the gateway's, with its Service and Ingress, is
    hand-written and checked by the tests above)."""
    for name, text in deployfiles.k8s_service(registry.get(service)).items():
        assert (K8S / "services" / service / name).read_text() == text, name


def test_k8s_base_names_every_workload_portico_and_no_service() -> None:
    docs = kustomize.render(K8S / "base")
    assert {(d["kind"], d["metadata"]["name"]) for d in docs} == {
        ("Deployment", "portico"),
        ("HorizontalPodAutoscaler", "portico"),
        ("PodDisruptionBudget", "portico"),
    }
    text = " ".join((K8S / "base" / n).read_text() for n in ("deployment.yaml", "hpa.yaml"))
    for service in SERVICES:
        assert service not in text, service


def test_k8s_render_names_and_labels_each_service() -> None:
    docs = kustomize.render(K8S)
    for kind in ("Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
        names = sorted(d["metadata"]["name"] for d in docs if d["kind"] == kind)
        assert names == sorted(f"portico-{s}" for s in SERVICES), kind
    for d in docs:
        if d["metadata"]["name"].startswith("portico-") and d["kind"] != "ConfigMap":
            component = d["metadata"]["labels"].get("app.kubernetes.io/component")
            assert component and d["metadata"]["name"] in {
                f"portico-{component}",
                "portico-blobs",
            }, d["metadata"]["name"]


def test_kustomize_merge_is_strategic() -> None:
    base = {"containers": [{"name": "a", "env": [{"name": "X", "value": "1"}], "envFrom": [1]}]}
    patch = {"containers": [{"name": "a", "env": [{"name": "Y", "value": "2"}], "envFrom": [2]}]}
    assert kustomize.merge(base, patch) == {
        "containers": [
            {
                "name": "a",
                "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}],
                "envFrom": [2],
            }
        ]
    }
    assert kustomize.merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}}


def test_procfile_is_the_registry() -> None:
    """deploy/Procfile is what `portico up` runs: regenerate it with
    `python -m portico.deployfiles --write` after changing services/registry.py."""
    assert (DEPLOY / "Procfile").read_text() == deployfiles.procfile()
    for service in registry.registered():
        assert f"{service.name}: PORT=${{{service.env_prefix}_PORT:-{service.port}}}" in (
            deployfiles.procfile()
        )


# ----------------------------------------------------------------- secrets ---


def _fake_pem() -> str:
    body = base64.b64encode(os.urandom(96)).decode()
    return "-----BEGIN " + "PRIVATE KEY-----\n" + body + "\n-----END " + "PRIVATE KEY-----\n"


def test_private_key_detector_catches_real_looking_keys() -> None:
    pem = _fake_pem()
    assert PRIVATE_KEY_RE.search(pem)
    assert PRIVATE_KEY_RE.search(json.dumps({"kid": pem}))
    assert PRIVATE_KEY_RE.search(pem.replace("BEGIN PRIVATE", "BEGIN RSA PRIVATE"))
    assert not PRIVATE_KEY_RE.search(
        "-----BEGIN " + "PRIVATE KEY-----\\nCHANGE-ME\\n-----END " + "PRIVATE KEY-----"
    )


def test_no_real_private_key_in_deploy_tree() -> None:
    for path in sorted(p for p in DEPLOY.rglob("*") if p.is_file()):
        assert not PRIVATE_KEY_RE.search(path.read_text(errors="replace")), path


def test_secrets_hold_placeholders_only() -> None:
    secrets = _of_kind("Secret")
    assert {f"portico-{s}" for s in SERVICES} <= {s["metadata"]["name"] for s in secrets}
    for secret in secrets:
        for key, value in _secret_values(secret).items():
            assert not PRIVATE_KEY_RE.search(value), (secret["metadata"]["name"], key)
            assert "CHANGE-ME" in value, (secret["metadata"]["name"], key)


def test_secret_data_is_valid_base64() -> None:
    for secret in _of_kind("Secret"):
        for key, value in (secret.get("data") or {}).items():
            try:
                base64.b64decode(value, validate=True)
            except binascii.Error:  # pragma: no cover - failure path
                pytest.fail(f"{secret['metadata']['name']}.{key} is not base64")


# -------------------------------------------------------------- Dockerfile ---


def _dockerfile_stages() -> list[list[tuple[str, str]]]:
    """Instructions of each build stage, continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "dangling line continuation"
    stages: list[list[tuple[str, str]]] = [[]]
    for line in logical:
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stages.append([])
        stages[-1].append((instruction, rest.strip()))
    return stages


def _final_stage() -> list[tuple[str, str]]:
    return _dockerfile_stages()[-1]


def test_dockerfile_base_image_is_python_slim() -> None:
    stages = _dockerfile_stages()
    args = dict(a.split("=", 1) for i, a in stages[0] if i == "ARG" and "=" in a)
    for stage in stages[1:]:
        base = stage[0][1].split()[0]
        base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
        assert base == "python:3.11-slim"


def test_dockerfile_runs_as_non_root_user() -> None:
    users = [a for i, a in _final_stage() if i == "USER"]
    assert users, "final stage has no USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}


def test_dockerfile_entrypoint_and_default_command() -> None:
    final = _final_stage()
    (entrypoint,) = [json.loads(a) for i, a in final if i == "ENTRYPOINT"]
    (cmd,) = [json.loads(a) for i, a in final if i == "CMD"]
    assert entrypoint == ["portico"]
    assert cmd == ["run", "gateway"]


def test_dockerfile_healthcheck_probes_healthz_on_port() -> None:
    (check,) = [a for i, a in _final_stage() if i == "HEALTHCHECK"]
    assert "/healthz" in check
    assert "PORT" in check
    assert "python" in check
    assert "curl" not in check
    options, _, command = check.partition("CMD ")
    assert "--interval=" in options
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"]
    compile(argv[2], "<HEALTHCHECK>", "exec")


@pytest.mark.parametrize("service", SERVICES)
def test_compose_healthcheck_code_compiles(service: str) -> None:
    argv = _compose()["services"][service]["healthcheck"]["test"]
    assert argv[:4] == ["CMD", "python", "-c", argv[3]]
    compile(argv[3], "<healthcheck>", "exec")


def test_dockerfile_installs_with_constraints_and_no_build_tools() -> None:
    runs = [a for stage in _dockerfile_stages() for i, a in stage if i == "RUN"]
    assert any("pip" in r and "-c " in r and "constraints.txt" in r for r in runs)
    final_runs = " ".join(a for i, a in _final_stage() if i == "RUN")
    for tool in ("build-essential", "gcc", "apt-get install"):
        assert tool not in final_runs, tool
    assert "--no-index" in final_runs


def test_dockerfile_copies_every_package_and_context_allows_them() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    ]
    copied = " ".join(a for stage in _dockerfile_stages() for i, a in stage if i == "COPY")
    allowed = {
        line.strip()[1:].strip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip().startswith("!")
    }
    for needed in [*packages, "pyproject.toml", "constraints.txt"]:
        assert needed in copied.split(), needed
        assert needed in allowed, needed


def test_every_process_configuration_loads_in_production() -> None:
    """What each process is given is enough for kit.config in production mode (services
    need neither the database owner nor the broker administrator; setup needs both)."""
    from kit.config import read_settings

    compose = _compose()["services"]
    for name in ("setup", *SERVICES):
        env = {k: str(v) for k, v in compose[name]["environment"].items() if v is not None}
        settings = read_settings(env)
        assert settings.production, name
        assert bool(settings.admin_database_url) == (name == "setup"), name
        assert (settings.amqp_admin_uri is not None) == (name == "setup"), name
    (config,) = _of_kind("ConfigMap")
    for secret in ("portico-setup", *(f"portico-{s}" for s in SERVICES), "portico-operator"):
        env = {**config["data"], **_secret_values(_secret(secret))}
        settings = read_settings(env)
        assert (settings.amqp_admin_uri is not None) == (secret == "portico-setup"), secret
    setup = read_settings({**config["data"], **_secret_values(_secret("portico-setup"))})
    setup.broker_password("services")
    setup.broker_password("operator")
