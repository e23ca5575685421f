"""The care team's web interface, served by the ingest service beside its API.

Server-rendered pages (Jinja2) with a little plain JavaScript for the live queue; no front-end
build. It sits above :mod:`cloud_ingest.api` (same identities, same service calls, same routing:
staff see only their teams' patients) and adds ``/ui``: the alert queue, an alert's explanation
and actions, patient views with the charts of the field, the fleet, and printable reports.
Finnish by default; Swedish and English switchable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from cloud_ingest.api import create_app
from cloud_ingest.service import IngestService
from cloud_ingest.settings import IngestSettings
from cloud_ingest.web import pages
from cloud_ingest.web.session import (
    UI_PREFIX,
    CrossSiteError,
    LoginRequiredError,
    translator,
)

STATIC_DIR = Path(__file__).parent / "static"


def create_web_app(service: IngestService, settings: IngestSettings) -> FastAPI:
    """The API app with the web UI mounted at ``/ui`` (and ``/`` leading to it)."""
    app = create_app(service, settings)
    app.include_router(pages.router)
    app.mount(f"{UI_PREFIX}/static", StaticFiles(directory=STATIC_DIR), name="ui-static")

    @app.middleware("http")
    async def _ui_headers(request: Request, call_next: Any) -> Any:
        """Rendered pages set these themselves; redirects, static files and errors get them
        here, so no response under /ui can be framed, sniffed or cached."""
        response = await call_next(request)
        if request.url.path.startswith(UI_PREFIX):
            for name, value in pages.SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
        return response

    @app.get("/", include_in_schema=False)
    def _root() -> RedirectResponse:
        return RedirectResponse(f"{UI_PREFIX}/queue", status_code=303)

    @app.exception_handler(LoginRequiredError)
    def _login(_r: Request, exc: LoginRequiredError) -> RedirectResponse:
        target = f"{UI_PREFIX}/login"
        if exc.next_path:
            target += "?" + urlencode({"next": exc.next_path})
        return RedirectResponse(target, status_code=303)

    @app.exception_handler(CrossSiteError)
    def _cross_site(request: Request, _exc: CrossSiteError) -> HTMLResponse:
        t = translator(request)
        return pages.error_page(request, t, None, 403, t("error.origin"))

    return app


__all__ = ["create_web_app"]
