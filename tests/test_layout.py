"""The shape of the code (docs/architecture.md: imports form a tree, small functions and modules), checked by
reading the source: training -> modelfile <- service and nothing else between them, no cycle anywhere,
training's rooms one level deep, each importing only the rooms before it, export never reaches the loop, the
service and its tests never import training or torch, and importing the contract pulls in neither torch nor
onnxruntime."""

from __future__ import annotations

import ast
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("modelfile", "training", "service")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The modules of this repository a file imports (``from pkg import mod`` counts as pkg.mod)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {
        m
        for m in found
        if (REPO / Path(*m.split("."))).with_suffix(".py").is_file()
        or (REPO / Path(*m.split(".")) / "__init__.py").is_file()
    }


def graph(*folders: str) -> dict[str, set[str]]:
    """Module -> the modules it imports, less its own packages (``from . import x`` runs this package's
    ``__init__`` first, which Python does for every submodule anyway)."""
    return {
        module_name(p): imports_of(p) - {module_name(p)} - ancestors(module_name(p))
        for folder in folders
        for p in sorted((REPO / folder).rglob("*.py"))
    }


def ancestors(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for n in sorted(g.get(m, ())):
            if state.get(n) == 1:
                return [*path[path.index(n) :], n] if n in path else [m, n]
            if n not in state and (found := visit(n, [*path, n])):
                return found
        state[m] = 2
        return None

    for m in g:
        if m not in state and (found := visit(m, [m])):
            return found
    return None


def reachable(g: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for n in g.get(todo.pop(), ()):
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return seen


def test_imports_form_a_tree():
    g = graph(*PACKAGES)
    assert cycle(g) is None, " -> ".join(cycle(g))


def test_training_and_the_service_meet_only_in_the_contract():
    g = graph(*PACKAGES)
    edges = {(m.split(".")[0], n.split(".")[0]) for m, targets in g.items() for n in targets}
    assert {(a, b) for a, b in edges if a != b} == {("training", "modelfile"), ("service", "modelfile")}


# training's rooms, each importing only itself and the rooms before it; beside them, what every room reads and the
# commands that compose the rooms.
TRAINING_ROOMS = ("data", "nets", "methods", "run", "evaluation", "export", "posthoc")
TRAINING_SHARED = {"training.config", "training.ranks"}
TRAINING_COMMANDS = {
    "training",
    "training.__main__",
    "training.cli",
    "training.bundled",
    "training.card_fields",
    "training.toy2d",
}


def training_room_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in TRAINING_ROOMS else None


def test_training_is_rooms_one_level_deep():
    g = graph("training")
    outside = {m for m in g if training_room_of(m) is None}
    assert outside == TRAINING_SHARED | TRAINING_COMMANDS
    assert not [m for m in g if training_room_of(m) and m.count(".") > 2], "a room holds modules, not more rooms"
    for room in TRAINING_ROOMS:
        assert ast.get_docstring(ast.parse((REPO / "training" / room / "__init__.py").read_text())), room


def test_each_room_of_training_imports_only_itself_and_the_rooms_before_it():
    g = graph("training")
    for m, targets in g.items():
        if (room := training_room_of(m)) is None:
            continue
        allowed = set(TRAINING_ROOMS[: TRAINING_ROOMS.index(room) + 1])
        wrong = {
            n
            for n in targets
            if n.startswith("training.") and training_room_of(n) not in allowed and n not in TRAINING_SHARED
        }
        assert not wrong, (m, wrong)


def test_what_every_training_room_reads_imports_no_room():
    g = graph("training")
    assert not {(m, n) for m in TRAINING_SHARED for n in g[m] if n not in TRAINING_SHARED}


def test_export_reads_checkpoints_never_the_loop():
    g = graph("training")
    assert "training.run.loop" not in reachable(g, "training.export")
    assert "training.run.checkpoint" in reachable(g, "training.export")


def test_a_method_command_is_no_module_beside_the_method():
    methods = {p.stem for p in (REPO / "training" / "methods").glob("*.py")} - {"__init__"}
    assert not {p.stem for p in (REPO / "training").glob("*.py")} & methods


def test_importing_the_contract_pulls_in_neither_torch_nor_onnxruntime():
    code = "import sys, modelfile; print(sorted({'torch', 'onnxruntime'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_cycle_finder_finds_a_cycle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


@pytest.mark.parametrize("folder", ["service", "tests/service"])
def test_serving_code_and_its_tests_never_import_training_or_torch(folder):
    for path in sorted((REPO / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            assert not [n for n in names if n.split(".")[0] in ("training", "torch")], (path, names)


def wrapped_lines(source: str) -> set[int]:
    """Line numbers that start inside an open bracket: the continuation lines of one wrapped expression.

    Sizes are counted without them, so that they measure what is written, not how the formatter lays out a
    long call (one argument a line); a docstring or a comment still counts line by line.
    """
    depth, inside = 0, set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.OP and tok.string in "([{":
            depth += 1
        elif tok.type == tokenize.OP and tok.string in ")]}":
            depth -= 1
        elif tok.type in (tokenize.NL, tokenize.NEWLINE) and depth > 0:
            inside.add(tok.start[0] + 1)
    return inside


@pytest.mark.parametrize("folder", ["modelfile", "training", "service", "bench", "scripts"])
def test_functions_stay_small(folder):
    for path in sorted((REPO / folder).rglob("*.py")):
        source = path.read_text()
        wrapped = wrapped_lines(source)
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = set(range(node.lineno, node.end_lineno + 1)) - wrapped
                assert len(lines) <= 60, (path, node.name, len(lines))


@pytest.mark.parametrize("folder", PACKAGES)
def test_modules_stay_small(folder):
    for path in sorted((REPO / folder).rglob("*.py")):
        source = path.read_text()
        assert len(source.splitlines()) - len(wrapped_lines(source)) <= 400, path


def test_a_call_wrapped_one_argument_a_line_counts_as_one_line():
    lines = [
        "def f():",
        '    """Two',
        '    lines."""',
        "    g(",
        "        1,",
        "        2,",
        "    )",
        "    # why",
        "    return 3",
    ]
    source = "\n".join(lines) + "\n"
    assert wrapped_lines(source) == {5, 6, 7}


# --- the rooms of the service ----------------------------------------------------------------------

SERVICE_ROOMS = {"http", "pipeline", "models", "metrics"}
SERVICE_TOP = {"service", "service.__main__", "service.app", "service.settings", "service.errors"}


def room_of(module: str) -> str:
    """``service.pipeline.batcher`` -> ``pipeline``; a module at the top is a room of its own."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in SERVICE_ROOMS else module


def test_the_service_is_rooms_one_level_deep_and_a_short_top():
    modules = set(graph("service"))
    assert {m for m in modules if room_of(m) == m} == SERVICE_TOP
    assert {m.split(".")[1] for m in modules if m.count(".") == 2} == SERVICE_ROOMS
    assert not [m for m in modules if m.count(".") > 2]
    for room in sorted(SERVICE_ROOMS):
        init = REPO / "service" / room / "__init__.py"
        tree = ast.parse(init.read_text())
        assert ast.get_docstring(tree), f"{init}: say what the room owns"
        assert not [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)], f"{init}: no imports"


@pytest.mark.parametrize(
    ("room", "never"),
    [
        ("pipeline", {"http", "models"}),
        ("models", {"http"}),
        ("metrics", {"http", "pipeline", "models"}),
    ],
)
def test_the_rooms_of_the_service_import_downwards(room, never):
    g = graph("service")
    crossing = {
        (m, n)
        for m, targets in g.items()
        if m.startswith(f"service.{room}.")
        for n in targets
        if n.startswith("service.") and room_of(n) in never
    }
    assert not crossing, crossing


def test_nothing_in_the_service_imports_the_app_and_its_leaves_import_nothing_of_it():
    g = graph("service")
    assert not {m for m, targets in g.items() if "service.app" in targets}  # __main__ names it for uvicorn
    for leaf in ("service.errors", "service.settings"):
        assert not {n for n in g[leaf] if n.startswith("service.")}, leaf


def test_routes_read_the_app_state_through_its_accessors():
    owner = REPO / "service" / "http" / "state.py"
    for path in sorted((REPO / "service").rglob("*.py")):
        if path != owner:
            assert "app.state" not in path.read_text(), path


def test_the_architecture_page_names_every_module():
    page = (REPO / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"[a-z_0-9]+", page))
    modules = {p.stem for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py") if not p.stem.startswith("__")}
    assert not modules - named, sorted(modules - named)
