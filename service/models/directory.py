"""The model directory: which model files it holds, and which of them the version policy serves.

Layout (Triton's, plus the flat files oodserve always served):

    models/NAME/VERSION/model.onnx    VERSION a positive whole number; the directory names the model
    models/NAME.onnx                  version 1 of the model its metadata names

Version policy: of each model, the newest ``model_versions`` versions (0: all). Which of those
pass the checks is for loading to find out; the policy then falls back past the refused ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

VERSION_FILE = "model.onnx"


@dataclass(frozen=True)
class Origin:
    """Where a served version came from: the file (relative to the model directory) and its stamp."""

    source: str
    group: str  # the model name the layout gives: the directory of NAME/VERSION/, or a flat file's stem
    stamp: tuple[int, int, int]  # size, mtime_ns, inode: changes when the file is replaced


@dataclass(frozen=True)
class ModelFile:
    path: Path
    version: str
    origin: Origin
    flat: bool  # NAME.onnx: named by its metadata, not by a directory


def scan(model_dir: Path) -> list[ModelFile]:
    """Every model file in the directory, in a stable order."""
    if not model_dir.is_dir():
        return []
    found = []
    for path in sorted(model_dir.glob("*.onnx")):
        found.append(_model_file(path, model_dir, path.stem, "1", flat=True))
    for path in sorted(model_dir.glob(f"*/*/{VERSION_FILE}")):
        version = path.parent.name
        if version.isascii() and version.isdigit() and int(version) > 0:
            found.append(_model_file(path, model_dir, path.parent.parent.name, str(int(version)), flat=False))
    return [f for f in found if f is not None]


def _model_file(path: Path, model_dir: Path, group: str, version: str, *, flat: bool) -> ModelFile | None:
    try:
        st = path.stat()
    except OSError:  # removed between the listing and now
        return None
    stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
    return ModelFile(path, version, Origin(str(path.relative_to(model_dir)), group, stamp), flat)


def newest(files: list[ModelFile], keep: int) -> list[ModelFile]:
    """The version policy: of each model (layout name), its ``keep`` newest versions (0: all)."""
    by_group: dict[str, list[ModelFile]] = {}
    for f in files:
        by_group.setdefault(f.origin.group, []).append(f)
    chosen = []
    for group in by_group.values():
        group.sort(key=lambda f: (-int(f.version), f.origin.source))
        chosen += group[:keep] if keep else group
    return sorted(chosen, key=lambda f: f.origin.source)
