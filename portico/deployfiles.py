"""Deployment files that follow from the service registry.

``portico up`` runs the Procfile made here; deploy/Procfile is the same text for
those who run honcho themselves, and deploy/k8s/services/<name>/ of every service but
the public one (the gateway's folder also holds its Service and Ingress, by hand) is
the kustomize patch made here. tests/test_deploy.py checks they agree; after changing
the registry run ``python -m portico.deployfiles --write``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

from kit import registry

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"

MAIL = (
    "mail: exec python -m portico.devmail --host 127.0.0.1 --port ${SMTP_PORT:-1025}"
    " --dir ${MAIL_DIR:-var/mail}"
)


def procfile(services: Iterable[registry.Service] | None = None) -> str:
    """The local mail catcher, then one process per service, each on ``<NAME>_PORT``."""
    lines = [MAIL]
    for s in registry.registered() if services is None else services:
        lines.append(f"{s.name}: PORT=${{{s.env_prefix}_PORT:-{s.port}}} exec portico run {s.name}")
    return "\n".join(lines) + "\n"


def port_env(services: Iterable[registry.Service] | None = None) -> dict[str, str]:
    """``<NAME>_PORT`` of every service at its registered default."""
    return {
        f"{s.env_prefix}_PORT": str(s.port)
        for s in (registry.registered() if services is None else services)
    }


K8S_KUSTOMIZATION = """\
# {name}: the base Deployment + HPA + PDB (../../base), named portico-{name}.
# Written by `python -m portico.deployfiles --write` from services/registry.py.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../base
nameSuffix: -{name}
labels:
  - pairs:
      app.kubernetes.io/component: {name}
    includeSelectors: true
patches:
  - path: deployment.yaml
"""

K8S_PATCH = """\
# What {name} adds to the base Deployment: its command, port and Secret (and its
# replicas and resources where services/registry.py differs from the base's).
apiVersion: apps/v1
kind: Deployment
metadata:
  name: portico
spec:
  template:
    metadata:
      annotations:
        prometheus.io/port: "{port}"
    spec:
{blob_pod}      # Labels inside a pod spec are not kustomize's to rewrite: spread by this service's.
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              app.kubernetes.io/name: portico
              app.kubernetes.io/component: {name}
      containers:
        - name: portico
          args: ["run", "{name}"]
          ports:
            - name: http
              containerPort: {port}
              protocol: TCP
          env:
            - name: PORT
              value: "{port}"
          envFrom:
            - configMapRef:
                name: portico-config
            - secretRef:
                name: portico-{name}
{resources}{blob_mount}"""

K8S_RESOURCES = """\
          resources:
            requests:
              cpu: {r.cpu_request}
              memory: {r.memory_request}
            limits:
              cpu: "{r.cpu_limit}"
              memory: {r.memory_limit}
"""

# The shared blob store (services/registry.py `blobs`): the portico-blobs claim, group
# writable by the portico user, mounted read-only where the service only reads.
K8S_BLOB_POD = """\
      securityContext:
        fsGroup: 10001
        fsGroupChangePolicy: OnRootMismatch
      volumes:
        - name: blobs
          persistentVolumeClaim:
            claimName: portico-blobs
"""

K8S_BLOB_MOUNT = """\
          volumeMounts:
            - name: blobs
              mountPath: /var/lib/portico/blobs
              readOnly: {read_only}
"""

K8S_HPA = """\
# {name}'s replica range (services/registry.py).
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: portico
spec:
  minReplicas: {min}
  maxReplicas: {max}
"""


def k8s_service(service: registry.Service) -> dict[str, str]:
    """The files of deploy/k8s/services/<name>/ for a service that is not public."""
    default = registry.Service("base", "base:Base", 1)
    resources = ""
    if service.resources != default.resources:
        resources = K8S_RESOURCES.format(r=service.resources)
    files = {
        "kustomization.yaml": K8S_KUSTOMIZATION.format(name=service.name),
        "deployment.yaml": K8S_PATCH.format(
            name=service.name,
            port=service.port,
            resources=resources,
            blob_pod=K8S_BLOB_POD if service.blobs else "",
            blob_mount=(
                K8S_BLOB_MOUNT.format(read_only=str(service.blobs == "ro").lower())
                if service.blobs
                else ""
            ),
        ),
    }
    if (service.min_replicas, service.max_replicas) != (default.min_replicas, default.max_replicas):
        files["kustomization.yaml"] += "  - path: hpa.yaml\n"
        files["hpa.yaml"] = K8S_HPA.format(
            name=service.name, min=service.min_replicas, max=service.max_replicas
        )
    return files


def write(services: Iterable[registry.Service] | None = None, root: Path = ROOT) -> list[Path]:
    """Write the Procfile and the non-public services' kustomize folders; the paths
    written. The top-level deploy/k8s/kustomization.yaml lists the folders by hand."""
    chosen = tuple(registry.registered() if services is None else services)
    written = [root / "deploy" / "Procfile"]
    written[0].write_text(procfile(chosen))
    for service in chosen:
        if service.public:
            continue
        folder = root / "deploy" / "k8s" / "services" / service.name
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in k8s_service(service).items():
            (folder / name).write_text(text)
            written.append(folder / name)
    return written


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        for path in write():
            print(path.relative_to(ROOT))
    else:
        print(procfile(), end="")
