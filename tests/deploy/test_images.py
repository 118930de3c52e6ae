"""The Dockerfiles: hadolint-clean, pinned bases, an unprivileged user, every package the image's
entry point imports copied (and sent in the build context), and the properties the serving images
promise."""

from __future__ import annotations

import ast
import http.server
import re
import socket
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import pytest
from deploy_checks import DOCKER, ROOT, require_tool

DOCKERFILES = sorted(DOCKER.glob("Dockerfile*"))
SERVING = [DOCKER / "Dockerfile", DOCKER / "Dockerfile.gpu"]
# The repository's own top-level packages: what an image must copy rather than pip-install.
FIRST_PARTY = {p.parent.name for p in ROOT.glob("*/__init__.py")}


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """``(KEYWORD, arguments)`` of each instruction, continuation lines joined, comments dropped."""
    joined, pending = [], ""
    for line in dockerfile.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        joined.append(pending + line)
        pending = ""
    return [(words[0].upper(), words[1] if len(words) > 1 else "") for words in (j.split(None, 1) for j in joined)]


def last_stage(dockerfile: Path) -> list[tuple[str, str]]:
    """The instructions of the stage that ships: from the last FROM on."""
    steps = instructions(dockerfile)
    start = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[start:]


def base_images(dockerfile: Path) -> list[str]:
    """Each FROM's image, with the ``ARG`` defaults it names filled in; earlier stages left out."""
    args, stages, images = {}, set(), []
    for keyword, rest in instructions(dockerfile):
        if keyword == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            image, *alias = rest.split()
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], image)
            if image not in stages and image not in images:
                images.append(image)
            if alias:  # `AS name`
                stages.add(alias[-1])
    return images


def copied_sources(dockerfile: Path) -> list[str]:
    """The build-context paths every ``COPY`` (not ``COPY --from``, which copies between stages) reads."""
    sources = []
    for keyword, rest in instructions(dockerfile):
        words = rest.split()
        if keyword == "COPY" and not any(w.startswith("--from") for w in words):
            sources += [w for w in words if not w.startswith("--")][:-1]  # the last word is the destination
    return sources


def entry_package(dockerfile: Path) -> str:
    """The package the image runs: the ``-m`` argument of its ENTRYPOINT and CMD."""
    command = " ".join(rest for keyword, rest in last_stage(dockerfile) if keyword in ("ENTRYPOINT", "CMD"))
    return re.search(r'"-m",\s*"(\w+)', command).group(1)


def first_party_imports(package: str) -> set[str]:
    """The repository's packages that any module of ``package`` imports, at any depth of its code."""
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name.partition(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.partition(".")[0])
    return found & FIRST_PARTY


def in_build_context(path: str) -> bool:
    """Whether .dockerignore lets ``path`` into the build context: the last pattern that matches the
    path or one of its parent folders decides, a ``!`` pattern letting it in."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        glob = pattern.lstrip("!").strip("/")
        regex = re.escape(glob).replace(r"\*\*", ".*").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            included = negated
    return included


def test_dockerfile_reader():
    # The reader the checks below trust, on the shapes of line the Dockerfiles use.
    steps = instructions(DOCKER / "Dockerfile")
    assert ("COPY", "service/ /app/service/") in steps
    runs = [rest for keyword, rest in steps if keyword == "RUN"]
    assert any("import tomllib" in rest and "pip uninstall -y pip setuptools" in rest for rest in runs)
    assert base_images(DOCKER / "Dockerfile") == ["python:3.11-slim-bookworm"]
    assert "docker/healthcheck.py" in copied_sources(DOCKER / "Dockerfile")
    assert in_build_context("service/app.py") and not in_build_context(".venv/bin/python")
    assert not in_build_context("service/__pycache__")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_base_images_are_pinned_to_a_version(dockerfile):
    for image in base_images(dockerfile):
        tag = image.rsplit("/", 1)[-1].partition(":")[2]  # not a registry's :port
        assert "@sha256:" in image or (tag and tag != "latest" and re.search(r"\d+\.\d+", tag)), (
            f"{image}: a rebuild could pull a different base"
        )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_shipped_stage_runs_as_an_unprivileged_user(dockerfile):
    users = [rest.split(":")[0] for keyword, rest in last_stage(dockerfile) if keyword == "USER"]
    assert users, "no USER: the container runs as the base image's user, root for these bases"
    assert users[-1] not in {"root", "0"}, users[-1]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_copied_path_exists_and_is_in_the_build_context(dockerfile):
    for source in copied_sources(dockerfile):
        assert (ROOT / source).exists(), f"COPY {source}: no such path in the repository"
        assert in_build_context(source), f"COPY {source}: .dockerignore keeps it out of the build context"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_package_the_entry_point_imports_is_copied(dockerfile):
    copied = {source.strip("/").split("/")[0] for source in copied_sources(dockerfile)}
    needed, todo = set(), [entry_package(dockerfile)]
    while todo:
        package = todo.pop()
        if package not in needed:
            needed.add(package)
            todo += first_party_imports(package)
    assert needed <= copied, f"imported but not copied: {sorted(needed - copied)}"


def test_the_training_base_brings_the_pinned_torch():
    """The base's torch must be the one pyproject.toml pins, or pip downloads another on top."""
    train = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["train"]
    pinned = next(re.fullmatch(r"torch==([\d.]+)", dep).group(1) for dep in train if dep.startswith("torch=="))
    (image,) = base_images(DOCKER / "Dockerfile.train")
    assert image.startswith(f"pytorch/pytorch:{pinned}-"), image


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(dockerfile):
    hadolint = require_tool("hadolint")
    result = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", SERVING, ids=lambda p: p.name)
def test_serving_image_promises(dockerfile):
    text = dockerfile.read_text()
    runtime = text.split(" AS runtime", 1)[1]  # the stage that ships
    assert re.search(r"^USER 10001", runtime, re.M), "runs as root"
    assert 'ENTRYPOINT ["tini", "--"]' in runtime, "SIGTERM must reach uvicorn through tini"
    assert 'CMD ["python", "-m", "service"]' in runtime
    assert re.search(r"^HEALTHCHECK .*healthcheck\.py", runtime, re.M)
    assert "COPY models/ /app/models/" in runtime
    # Byte-compiled at build time, as the root filesystem may be read-only at run time.
    compiled = re.search(r"^RUN python -m compileall -q (.*)$", runtime, re.M).group(1).split()
    for source in copied_sources(dockerfile):
        if (ROOT / source / "__init__.py").exists():
            assert f"/app/{source.strip('/')}" in compiled, f"{source} is not byte-compiled"
    assert "COPY training" not in text, "the serving image needs no training code"
    assert "OODSERVE_THREADS" not in runtime, "threads come from the cgroup CPU quota, not the image"


def test_serving_image_installs_no_torch():
    # The `serve` extra is what the CPU image installs; torch there would add ~1 GB.
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra in ("serve", "gpu"):
        assert not any(re.match(r"torch\b", dep) for dep in extras[extra]), extra


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # the stdlib calls it by this name
        self.send_response(self.status if self.path == "/readyz" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.parametrize(("status", "exit_code"), [(200, 0), (503, 1)])
def test_healthcheck_script(status, exit_code):
    handler = type("Handler", (_Handler,), {"status": status})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {"OODSERVE_PORT": str(server.server_address[1]), "PATH": ""}
        result = subprocess.run([sys.executable, str(DOCKER / "healthcheck.py")], env=env, timeout=10)
        assert result.returncode == exit_code
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_script_fails_when_nothing_listens():
    with socket.socket() as s:  # a free port, closed again: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"OODSERVE_PORT": str(port), "PATH": ""}
    result = subprocess.run([sys.executable, str(DOCKER / "healthcheck.py")], env=env, timeout=10,
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 1
    assert "/readyz" in result.stderr
