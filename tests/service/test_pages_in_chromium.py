"""The pages for people in a real browser: headless Chromium (Debian's ``chromium``; ``.ci/run`` installs it),
driven by Playwright, against a real server with the bundled models. The verdicts are read off the page and
compared with what ``/predict`` answers; the screenshots are checked not to be blank; every bundled model's card
renders its table and plots. The test reads what a user sees (selectors, text, boxes, the focused element): the
page's content security policy refuses scripts given as strings, such as Playwright's ``wait_for_function``'s."""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from servers import REPO

from modelfile import ID_ROW, read_metadata

sync_api = pytest.importorskip("playwright.sync_api")

PHOTO_MODEL = "cifar10-acet-oe-fastnet"
EXAMPLES = [REPO / "docs" / "examples" / name for name in ("cat.jpg", "coffee.jpg")]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
]
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "Chromium is not installed (Debian: apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must have it")
        pytest.skip(message)
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def not_blank(path: Path) -> None:
    """A screenshot with a page on it: many colours, and ink (dark pixels) as well as paper."""
    pixels = np.asarray(Image.open(path).convert("RGB"))
    assert pixels.shape[0] > 300 and pixels.shape[1] > 300, pixels.shape
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200, f"{path.name}: too few colours for a page"
    grey = pixels.mean(axis=2)
    assert (grey < 100).mean() > 0.002 and (grey > 200).mean() > 0.3, f"{path.name}: no text on paper"


def answers(server_url: str) -> dict[str, bool]:
    """What /predict says of each example: file name -> is_ood."""
    out = {}
    for path in EXAMPLES:
        r = httpx.post(
            f"{server_url}/predict", params={"model": PHOTO_MODEL}, files={"file": (path.name, path.read_bytes())}
        )
        out[path.name] = r.json()["predictions"][0]["is_ood"]
    return out


def upload(page, server_url: str) -> None:
    page.goto(f"{server_url}/?model={PHOTO_MODEL}")
    page.wait_for_selector("body[data-ready=true]")
    page.set_input_files("#files", [str(p) for p in EXAMPLES])
    for i in range(1, len(EXAMPLES) + 1):
        page.wait_for_selector(f".result[data-verdict]:nth-child({i})")


def test_the_page_shows_each_verdict_as_the_api_gives_it(browser, server, tmp_path):
    api = answers(server.url)
    assert set(api.values()) == {True, False}, "the examples should show both verdicts"
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    upload(page, server.url)
    for article in page.query_selector_all(".result"):
        name = article.get_attribute("data-filename")
        said = "rejected" if api[name] else "accepted"
        assert article.get_attribute("data-verdict") == said, name
        assert article.query_selector(".verdict strong").inner_text() == said.capitalize()
        assert len(article.query_selector_all(".probs li")) == 5
        assert article.query_selector("svg .threshold") and article.query_selector("svg .marker")
        assert "in-distribution" in article.query_selector(".p-value").inner_text()
    assert page.inner_text("#status") == f"{PHOTO_MODEL}: 1 accepted, 1 rejected."
    page.screenshot(path=str(tmp_path / "predict.png"), full_page=True)
    not_blank(tmp_path / "predict.png")
    page.close()


def test_the_page_works_from_the_keyboard_and_fits_a_phone(browser, server, tmp_path):
    page = browser.new_page(viewport=PHONE)
    page.goto(f"{server.url}/?model={PHOTO_MODEL}")
    page.wait_for_selector("body[data-ready=true]")
    page.bring_to_front()  # keyboard focus belongs to the page in front
    reached = []
    for _ in range(5):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("() => document.activeElement.id"))
    assert "model" in reached and "pick" in reached, reached
    page.focus("#model")
    page.keyboard.press("ArrowDown")  # another model, chosen without a mouse, shows in the link to its card
    assert page.get_attribute("#card-link", "href") != f"card/{PHOTO_MODEL}"
    upload(page, server.url)
    for selector in ("main", ".result", ".result svg"):
        box = page.locator(selector).first.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (selector, box)
    page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
    not_blank(tmp_path / "phone.png")
    page.close()


def test_a_file_the_service_refuses_shows_its_error_beside_the_others(browser, server, tmp_path):
    text = tmp_path / "notes.txt"  # a type that is no image: sent all the same, the service names the problem
    text.write_bytes(b"not an image at all")
    page = browser.new_page()
    page.goto(f"{server.url}/?model={PHOTO_MODEL}")
    page.wait_for_selector("body[data-ready=true]")
    page.set_input_files("#files", [str(text), str(EXAMPLES[0])])
    page.wait_for_selector(".result[data-verdict]:nth-child(1)")
    page.wait_for_selector(".result[data-verdict]:nth-child(2)")
    first, second = page.query_selector_all(".result")
    assert first.get_attribute("data-verdict") == "error"
    assert "not" in first.query_selector(".error").inner_text().lower()
    assert second.get_attribute("data-verdict") in ("accepted", "rejected")
    page.close()


PASTE = """(b64) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const clipboard = new DataTransfer();
    clipboard.items.add(new File([bytes], "", { type: "image/jpeg" }));
    document.dispatchEvent(new ClipboardEvent("paste", { clipboardData: clipboard }));
}"""


def test_a_pasted_image_is_classified(browser, server):
    """Ctrl+V of an image: the browser's paste event carries a file with no name, as a screenshot's would."""
    page = browser.new_page()
    page.goto(f"{server.url}/?model={PHOTO_MODEL}")
    page.wait_for_selector("body[data-ready=true]")
    page.evaluate(PASTE, base64.b64encode(EXAMPLES[0].read_bytes()).decode())
    page.wait_for_selector(".result[data-verdict]")
    [article] = page.query_selector_all(".result")
    assert article.get_attribute("data-filename") == "pasted image"
    assert article.get_attribute("data-verdict") == ("rejected" if answers(server.url)["cat.jpg"] else "accepted")
    page.close()


def test_every_bundled_models_card_renders_its_table_and_plots(browser, server, model_dir, tmp_path):
    models = httpx.get(f"{server.url}/models").json()["models"]
    bundled = [m for m in models if (REPO / "models" / m["source"]).exists()]
    assert len(bundled) >= 5
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    for info in bundled:
        meta = read_metadata(model_dir / info["source"])
        page.goto(f"{server.url}/card/{info['name']}")
        page.wait_for_selector("body[data-ready=true]")
        assert page.inner_text("h1") == info["name"]
        assert len(page.query_selector_all("#ood-table tbody tr")) == len(meta.evaluation.ood)
        drawn = [n for n in meta.evaluation.ood if n in meta.evaluation.histograms.counts]
        assert ID_ROW in meta.evaluation.histograms.counts and drawn
        assert len(page.query_selector_all("#roc path.curve")) == len(drawn)
        assert len(page.query_selector_all("#histograms figure svg")) == len(drawn)
        assert page.query_selector("#calibration svg .threshold")
        saw = page.inner_text("main")
        assert meta.precision in saw and meta.dataset in saw
        assert all(kind in saw for kind in meta.training_negatives)
        shot = tmp_path / f"card-{info['name']}.png"
        page.screenshot(path=str(shot), full_page=True)
        not_blank(shot)
    page.close()


def test_a_card_for_a_model_not_served_says_so(browser, server):
    page = browser.new_page()
    page.goto(f"{server.url}/card/no-such-model")
    page.wait_for_selector("body[data-ready=error]")
    assert "unknown model 'no-such-model'" in page.inner_text("#status")
    page.close()
