"""The API's human pages: Swagger UI at `/docs`, ReDoc at `/redoc`, and where `GET /` leads.

Both pages work with no network beyond the controller: their scripts, styles and icon come from
the `fastapi-offline` package (the swagger-ui-dist and ReDoc builds, vendored) and are served
under `/static/docs/`, never from a CDN, and ReDoc is told not to fetch web fonts. Both pages
carry a Content-Security-Policy that allows only the controller itself (ReDoc's sidebar would
otherwise fetch its vendor's logo from the web), so nothing on them reaches out. Swagger UI
keeps what "Authorize" was given across reloads (`persistAuthorization`), so a key entered once
serves every "Try it out".

Must not import the route modules.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

#: Where `GET /` sends a browser: the one place to change when another page becomes the home.
HOME = "/dashboard"
DOCS = "/docs"
REDOC = "/redoc"
OAUTH2_REDIRECT = "/docs/oauth2-redirect"
STATIC = "/static/docs"
#: The vendored files: swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js, favicon.png.
ASSETS = Path(str(files("fastapi_offline") / "static"))
#: Same origin only; the pages' own inline start-up scripts and styles, ReDoc's blob: worker.
CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "worker-src 'self' blob:",
        "connect-src 'self'",
        "frame-ancestors 'self'",
    ]
)


def _same_origin_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CSP
    return page


def install(app: FastAPI) -> None:
    """Serve the docs pages, their files and the `/` redirect (create the app with
    `docs_url=None, redoc_url=None`)."""
    app.mount(STATIC, StaticFiles(directory=ASSETS), name="docs-static")
    title = f"{app.title} API"
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse(HOME, status_code=307)

    @app.get(DOCS, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return _same_origin_only(
            get_swagger_ui_html(
                openapi_url=openapi_url,
                title=title,
                oauth2_redirect_url=OAUTH2_REDIRECT,
                swagger_js_url=f"{STATIC}/swagger-ui-bundle.js",
                swagger_css_url=f"{STATIC}/swagger-ui.css",
                swagger_favicon_url=f"{STATIC}/favicon.png",
                swagger_ui_parameters={
                    "persistAuthorization": True,
                    "displayRequestDuration": True,
                },
            )
        )

    @app.get(OAUTH2_REDIRECT, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC, include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return _same_origin_only(
            get_redoc_html(
                openapi_url=openapi_url,
                title=title,
                redoc_js_url=f"{STATIC}/redoc.standalone.js",
                redoc_favicon_url=f"{STATIC}/favicon.png",
                with_google_fonts=False,
            )
        )
