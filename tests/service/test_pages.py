"""The pages for people over HTTP (tests/service/test_pages_in_chromium.py renders them): served from memory with a
content security policy, revalidated by ETag, and with ``ui`` off, ``/`` answers 404 and nothing else changes."""

from __future__ import annotations

import httpx
import pytest
from servers import REPO, ServerThread, settings_for

from modelfile import read_metadata
from service.http.pages import PAGE_DIR

PAGES = ["/", "/card/mnist-acet-lenet", "/card/no-such-model"]
ASSETS = sorted(p.name for p in PAGE_DIR.iterdir())


@pytest.mark.parametrize("path", PAGES)
def test_each_page_is_html_that_runs_only_its_own_scripts(client, path):
    r = client.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    policy = r.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe" not in policy
    assert r.headers["x-content-type-options"] == "nosniff"
    assert b"<script" in r.content and b"<script>" not in r.content  # no inline script: the policy would refuse it


@pytest.mark.parametrize("name", ASSETS)
def test_each_page_file_is_served_with_its_type_and_an_etag(client, name):
    r = client.get(f"/ui/{name}")
    assert r.status_code == 200
    assert r.content == (PAGE_DIR / name).read_bytes()
    assert r.headers["content-type"].split(";")[0] in ("text/html", "text/css", "text/javascript", "image/svg+xml")
    again = client.get(f"/ui/{name}", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert client.get(f"/ui/{name}", headers={"If-None-Match": '"stale"'}).status_code == 200


def test_an_unknown_page_file_is_a_json_404_naming_it(client):
    r = client.get("/ui/secrets.txt")
    assert r.status_code == 404
    assert r.json()["error"]["message"] == "no page file 'secrets.txt'"
    assert client.get("/ui/..%2Fpages.py").status_code == 404


def test_the_pages_reach_the_service_by_relative_urls_only(client):
    """So that a proxy serving the service under a path prefix serves the pages too."""
    for name in ASSETS:
        text = (PAGE_DIR / name).read_text()
        assert 'href="/' not in text and 'src="/' not in text and 'fetch("/' not in text, name
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", ""), name


def test_models_carry_what_the_pages_draw(client, model_dir):
    """The calibration histogram (read off the file's p-value table) and the file's negatives."""
    for info in client.get("/models").json()["models"]:
        meta = read_metadata(model_dir / info["source"])
        h = info["calibration_histogram"]
        assert len(h["counts"]["calibration"]) == len(h["edges"]) - 1
        assert abs(sum(h["counts"]["calibration"]) - meta.calibration.n) <= len(h["edges"])  # rounding per bin
        assert h["edges"][0] <= info["threshold"] <= h["edges"][-1]
        assert info["calibration_images"] == meta.calibration.n
        assert info["training_negatives"] == meta.training_negatives


def test_with_the_pages_off_the_root_is_404_and_nothing_else_changes(model_dir, client):
    with ServerThread(settings_for(model_dir, ui=False)) as off, httpx.Client(base_url=off.url, timeout=30) as c:
        for path in [*PAGES, "/ui/page.css", "/ui/predict.js"]:
            r = c.get(path)
            assert r.status_code == 404, path
            assert r.json()["error"]["code"] == "not_found"
        assert c.get("/openapi.json").json() == client.get("/openapi.json").json()
        assert c.get("/models").json() == client.get("/models").json()
        digit = (REPO / "docs" / "examples" / "digit-7.png").read_bytes()
        answers = [b.post("/predict", files={"file": ("7.png", digit, "image/png")}).json() for b in (c, client)]
        assert answers[0] == answers[1]
