"""The pages for people: ``/`` (drop images, see each verdict and why) and ``/card/{name}`` (a model's card).

Plain HTML, CSS and a script per page, no build step, read once at start-up and served from memory. The pages
call only the public API from the browser (``models``, ``predict``, by relative URLs), so a proxy, a path prefix
or authentication in front of the service covers them unchanged, and nothing here is on a prediction's way.
``OODSERVE_UI=0`` leaves the routes out: ``/`` answers 404 like any unknown path.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request, Response

PAGE_DIR = Path(__file__).with_name("page")
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript",
    ".svg": "image/svg+xml",
}
# Only the page's own files run; what the model says (class names, set names) is inserted as text, never as markup.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class Asset:
    def __init__(self, path: Path):
        self.body = path.read_bytes()
        self.media_type = MEDIA_TYPES[path.suffix]
        self.etag = '"' + hashlib.sha256(self.body).hexdigest()[:20] + '"'

    def response(self, request: Request) -> Response:
        # Revalidated on every load (no-cache), answered 304 when unchanged: a new release shows at once.
        headers = {**HEADERS, "ETag": self.etag, "Cache-Control": "no-cache"}
        if request.headers.get("if-none-match") == self.etag:
            return Response(status_code=304, headers=headers)
        return Response(self.body, media_type=self.media_type, headers=headers)


def router() -> APIRouter:
    """The pages' routes, their files read now: a missing file fails the start, not a visitor."""
    assets = {p.name: Asset(p) for p in sorted(PAGE_DIR.iterdir()) if p.suffix in MEDIA_TYPES}
    pages = APIRouter(include_in_schema=False)

    @pages.get("/")
    async def predict_page(request: Request) -> Response:
        return assets["index.html"].response(request)

    @pages.get("/card/{name}")
    async def card_page(request: Request, name: str) -> Response:
        # The same page for every name: its script asks `models/{name}` and says so when there is none.
        return assets["card.html"].response(request)

    @pages.get("/ui/{asset}")
    async def page_asset(request: Request, asset: str) -> Response:
        if asset not in assets:
            raise HTTPException(404, f"no page file '{asset[:64]}'")
        return assets[asset].response(request)

    return pages
