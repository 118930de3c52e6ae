"""The README's pictures of the pages for people, taken from the real service: ``make screenshots``.

Starts ``python -m service`` on a free loopback port with the bundled models (``photo_examples.bundled_service``),
opens ``/`` in headless Chromium (Debian's ``chromium``, driven by Playwright), gives the photo model
``docs/examples/cat.jpg`` and ``coffee.jpg`` (one accepted, one rejected), and saves the page (desktop and phone
width) and the model's card page to ``docs/images/``.
``python scripts/page_screenshots.py MODEL`` pictures another model.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from photo_examples import ROOT, bundled_service
from playwright.sync_api import Browser, sync_playwright

OUT = ROOT / "docs" / "images"
EXAMPLES = [ROOT / "docs" / "examples" / name for name in ("cat.jpg", "coffee.jpg")]
# Chromium as root in a container, on a machine with no network beyond loopback: no sandbox, no GPU, and none of
# the background connections it would otherwise keep trying.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",  # a container's /dev/shm is often 64 MB: Chromium's tabs would crash in it
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = {"width": 1100, "height": 900}
PHONE = {"width": 390, "height": 844}


def chromium() -> str:
    path = os.environ.get("OODSERVE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise SystemExit("error: no Chromium found (Debian: apt-get install chromium; or set OODSERVE_CHROMIUM)")
    return path


def verdicts(browser: Browser, url: str, model: str, viewport: dict, out: Path) -> list[tuple[str, str]]:
    """The predict page with the two examples given to ``model``: (file name, verdict) as the page shows them."""
    page = browser.new_page(viewport=viewport, device_scale_factor=1)
    page.goto(f"{url}/?model={model}")
    page.wait_for_selector("body[data-ready=true]")
    page.set_input_files("#files", [str(p) for p in EXAMPLES])
    for i in range(1, len(EXAMPLES) + 1):
        page.wait_for_selector(f".result[data-verdict]:nth-child({i})")
    page.screenshot(path=str(out), full_page=True)
    shown = [
        (a.get_attribute("data-filename"), a.get_attribute("data-verdict")) for a in page.query_selector_all(".result")
    ]
    page.close()
    return shown


def card(browser: Browser, url: str, model: str, out: Path) -> None:
    page = browser.new_page(viewport=DESKTOP, device_scale_factor=1)
    page.goto(f"{url}/card/{model}")
    page.wait_for_selector("body[data-ready=true]")
    page.screenshot(path=str(out), full_page=True)
    page.close()


def shrink(path: Path) -> None:
    """An adaptive 256-colour palette: the pages are flat colours and text, and the README's pictures a third the
    size."""
    from PIL import Image

    Image.open(path).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def main() -> None:
    model = sys.argv[1] if len(sys.argv) > 1 else "cifar10-acet-oe-fastnet"
    OUT.mkdir(parents=True, exist_ok=True)
    with bundled_service() as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        shown = verdicts(browser, url, model, DESKTOP, OUT / "page-predict.png")
        verdicts(browser, url, model, PHONE, OUT / "page-predict-phone.png")
        card(browser, url, model, OUT / "page-card.png")
        browser.close()
    for picture in OUT.glob("page-*.png"):
        shrink(picture)
    for name, verdict in shown:
        print(f"{name}: {verdict}")
    print(f"wrote {', '.join(p.name for p in sorted(OUT.glob('page-*.png')))} to docs/images/")


if __name__ == "__main__":
    main()
