"""/docs (Swagger UI) and /openapi.json, offline: the Swagger UI files come from the npm package
swagger-ui-dist, installed beside radbridge (`mappings.reference`, folder `swagger-ui/`), never
from a CDN. In production both need the API key, like every other endpoint but /healthz and
/readyz. Without the installed files /docs says how to install them (503)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.params import Depends
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from mappings.media_types import FHIR_JSON
from mappings.reference import INSTALL_HINT, reference_path

SWAGGER_DIR = "swagger-ui"
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}


def install_docs(app: FastAPI, dependencies: Sequence[Depends]) -> None:
    """Add /openapi.json, /docs and /docs/assets/* to `app` (built with docs_url=None,
    openapi_url=None, redoc_url=None), each behind `dependencies`."""
    guard = list(dependencies)

    @app.get("/openapi.json", dependencies=guard, include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", dependencies=guard, include_in_schema=False)
    async def docs() -> HTMLResponse:
        if reference_path(SWAGGER_DIR) is None:
            return HTMLResponse(
                "<!doctype html><title>radbridge API</title><p>Swagger UI is not installed: "
                f"{INSTALL_HINT}. The OpenAPI document is at <a href='/openapi.json'>"
                "/openapi.json</a>.</p>",
                status_code=503,
            )
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} API",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon-32x32.png",
        )

    @app.get(
        "/docs/assets/{name}", dependencies=guard, include_in_schema=False, response_model=None
    )
    async def asset(name: str) -> Any:
        folder = reference_path(SWAGGER_DIR)
        if name not in ASSETS or folder is None:
            return JSONResponse(
                {
                    "resourceType": "OperationOutcome",
                    "issue": [{"severity": "error", "code": "not-found", "diagnostics": name}],
                },
                status_code=404,
                media_type=FHIR_JSON,
            )
        return FileResponse(folder / name, media_type=ASSETS[name])
