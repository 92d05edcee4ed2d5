"""Just enough of ``kubectl kustomize`` to render deploy/k8s in tests (kustomize is not
installed here): resources (files and folders), nameSuffix with the references that
follow a rename, labels with includeSelectors, and strategic-merge patches of the kinds
deploy/k8s uses. Anything else in a kustomization is refused, so a file that needs more
of kustomize than this fails loudly instead of rendering wrong."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

KNOWN_KEYS = {"apiVersion", "kind", "resources", "nameSuffix", "labels", "patches"}
# Merge keys of the lists a strategic merge patch merges (others are replaced whole).
MERGE_KEYS = {
    "containers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "topologySpreadConstraints": "topologyKey",
}
CLUSTER_SCOPED = {"Namespace"}


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def kustomization(folder: Path) -> dict[str, Any]:
    (doc,) = load_docs(folder / "kustomization.yaml")
    unknown = set(doc) - KNOWN_KEYS
    assert not unknown, f"{folder}: this renderer does not know {sorted(unknown)}"
    return doc


def merge(base: Any, patch: Any, key: str | None = None) -> Any:
    """Strategic merge: maps merge, keyed lists merge item by item, other lists and
    scalars are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = merge(base[k], v, k) if k in base else copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and key in MERGE_KEYS:
        field = MERGE_KEYS[key]
        items = [copy.deepcopy(item) for item in base]
        for item in patch:
            found = [i for i, b in enumerate(items) if b.get(field) == item.get(field)]
            if found:
                items[found[0]] = merge(items[found[0]], item)
            else:
                items.append(copy.deepcopy(item))
        return items
    return copy.deepcopy(patch)


def _rename_references(doc: dict[str, Any], renamed: dict[tuple[str, str], str]) -> None:
    spec = doc.get("spec", {})
    if doc["kind"] == "HorizontalPodAutoscaler":
        ref = spec["scaleTargetRef"]
        ref["name"] = renamed.get((ref["kind"], ref["name"]), ref["name"])
    if doc["kind"] == "Ingress":
        for rule in spec.get("rules", []):
            for path in rule["http"]["paths"]:
                svc = path["backend"]["service"]
                svc["name"] = renamed.get(("Service", svc["name"]), svc["name"])
    if doc["kind"] == "Deployment":
        for volume in spec["template"]["spec"].get("volumes", []):
            claim = volume.get("persistentVolumeClaim")
            if claim:
                key = ("PersistentVolumeClaim", claim["claimName"])
                claim["claimName"] = renamed.get(key, claim["claimName"])


def _add_labels(doc: dict[str, Any], pairs: dict[str, str], selectors: bool) -> None:
    doc["metadata"].setdefault("labels", {}).update(pairs)
    if not selectors:
        return
    spec = doc.get("spec", {})
    if doc["kind"] == "Deployment":
        spec["selector"]["matchLabels"].update(pairs)
        spec["template"]["metadata"].setdefault("labels", {}).update(pairs)
    elif doc["kind"] == "PodDisruptionBudget":
        spec["selector"]["matchLabels"].update(pairs)
    elif doc["kind"] == "Service":
        spec["selector"].update(pairs)


def render(folder: Path) -> list[dict[str, Any]]:
    """The documents ``kubectl kustomize folder`` would print (for what deploy/k8s uses)."""
    k = kustomization(folder)
    docs: list[dict[str, Any]] = []
    for resource in k.get("resources", []):
        path = folder / resource
        docs += render(path) if path.is_dir() else copy.deepcopy(load_docs(path))
    for patch in k.get("patches", []):
        for p in load_docs(folder / patch["path"]):
            targets = [
                i
                for i, d in enumerate(docs)
                if d["kind"] == p["kind"] and d["metadata"]["name"] == p["metadata"]["name"]
            ]
            assert len(targets) == 1, f"{folder}: patch {patch['path']} matches {len(targets)}"
            docs[targets[0]] = merge(docs[targets[0]], p)
    suffix = k.get("nameSuffix", "")
    if suffix:
        renamed = {}
        for d in docs:
            if d["kind"] not in CLUSTER_SCOPED:
                old = d["metadata"]["name"]
                d["metadata"]["name"] = renamed[(d["kind"], old)] = old + suffix
        for d in docs:
            _rename_references(d, renamed)
    for label in k.get("labels", []):
        for d in docs:
            _add_labels(d, label["pairs"], bool(label.get("includeSelectors")))
    return docs
