"""Model management in Triton's sense: what the protocol's model repository extension does
(``/v2/repository``; service/http/v2_management.py has its HTTP side). List every version in the model
directory, load one model, unload one; each answers with the reason when it did not do what was asked."""

from __future__ import annotations

from service.errors import ServiceError
from service.models.directory import scan
from service.models.sync import ModelSync


class ManagementError(ServiceError):
    code = "repository_request_refused"


def index(sync: ModelSync) -> list[dict[str, str]]:
    """Every model version in the directory, and whether it is served (the extension's index)."""
    registry = sync.registry
    served = {m.origin.source: m for m in registry.served()}
    why = {r.source: r.why for r in registry.refused_files()}
    unloaded = sync.unloaded_groups
    rows = []
    for f in scan(sync.settings.model_dir):
        m = served.get(f.origin.source)
        if m is not None:
            rows.append({"name": m.name, "version": f.version, "state": "READY", "reason": ""})
        else:
            policy = "unloaded" if f.origin.group in unloaded else "not in the version policy"
            reason = why.get(f.origin.source) or policy
            rows.append({"name": f.origin.group, "version": f.version, "state": "UNAVAILABLE", "reason": reason})
    return rows


async def load(sync: ModelSync, name: str) -> None:
    await sync.load(name)
    registry = sync.registry
    why = [r.why for r in registry.refused_files(name)]
    if why:
        serving = [m.version for m in registry.versions_of(name)]
        kept = f"; still serving version(s) {', '.join(serving)}" if serving else ""
        raise ManagementError(f"model '{name}' was not loaded: {'; '.join(why)}{kept}")
    if not registry.versions_of(name):
        raise ManagementError(f"no model '{name}' in the model directory", code="model_not_found", status=404)


async def unload(sync: ModelSync, name: str) -> None:
    served = sync.registry.versions_of(name)
    if not served and name not in {f.origin.group for f in scan(sync.settings.model_dir)}:
        raise ManagementError(
            f"no model '{name}' is served or in the model directory", code="model_not_found", status=404
        )
    await sync.unload(name)
