"""The FastAPI app of `retrieval serve`: pages, /api/, static files, errors, the token.

Every request opens the index afresh through `Index` (a read-only snapshot of the catalogue
for the length of one call), so a `retrieval index` running beside the server is seen when it
commits and never half-way; the server itself never writes the catalogue.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException

from .. import Index, RetrievalError, __version__, display, printable
from . import api_routes, pages
from .batcher import EmbedBatcher
from .service import JSON, status_of
from .settings import TOKEN_COOKIE, Settings, too_large
from .uploads import RecentUploads

HERE = os.path.dirname(os.path.abspath(__file__))
#: The page may load only what this server serves (no fonts, scripts or styles from the
#: internet); images may also be the local preview of a file being dropped (blob:).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
    "frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def create_app(settings: Settings) -> FastAPI:
    """The app serving `settings.index_dir`; the embedding thread runs while it is started
    (uvicorn, or `with TestClient(app)`)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.index = Index(settings.index_dir, shared=True)
        app.state.batcher = EmbedBatcher(settings, app.state.index)
        app.state.batcher.start()
        try:
            yield
        finally:
            app.state.batcher.close()
            app.state.index.close()

    app = FastAPI(
        title="retrieval",
        version=__version__,
        description="Search a `retrieval` index by example image; see /api/docs.",
        lifespan=lifespan,
        default_response_class=JSON,
        docs_url=None,  # FastAPI's pages load Swagger UI from a CDN: /api/docs is local
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.settings = settings
    app.state.uploads = RecentUploads(settings.kept_uploads, settings.keep_uploads_s)
    templates = Jinja2Templates(directory=os.path.join(HERE, "templates"))
    templates.env.filters["display"] = display
    app.state.templates = templates
    app.mount("/static", StaticFiles(directory=os.path.join(HERE, "static")), name="static")
    app.include_router(api_routes.router)
    app.include_router(pages.router)
    _add_error_handlers(app)
    _add_middleware(app, settings)
    return app


def error_response(request: Request, status: int, message: str) -> Response:
    """{"error": message} under /api/, else the error page."""
    message = printable(message)
    if request.url.path.startswith("/api/"):
        return JSON({"error": message}, status_code=status)
    templates: Jinja2Templates = request.app.state.templates
    return templates.TemplateResponse(
        request, "error.html", {"status": status, "message": message}, status_code=status
    )


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RetrievalError)
    async def library_error(request: Request, exc: RetrievalError) -> Response:
        return error_response(request, status_of(exc), str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        detail = exc.detail if exc.status_code != 404 else f"nothing at {request.url.path}"
        return error_response(request, exc.status_code, str(detail))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'request'}: {e['msg']}"
            for e in exc.errors()
        )
        return error_response(request, 422, problems)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        return error_response(request, 500, f"internal error: {type(exc).__name__}: {exc}")


def _add_middleware(app: FastAPI, settings: Settings) -> None:
    Next = Callable[[Request], Awaitable[Response]]

    @app.middleware("http")
    async def guard(request: Request, call_next: Next) -> Response:
        denied = _token_problem(request, settings.token) or _size_problem(request, settings)
        if denied is not None:
            return error_response(request, *denied)
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        if settings.token is not None and request.query_params.get("token"):
            response.set_cookie(TOKEN_COOKIE, settings.token, httponly=True, samesite="strict")
        return response


def _token_problem(request: Request, token: str | None) -> tuple[int, str] | None:
    """(401, why) without a token, (403, why) with a wrong one, None when allowed."""
    if token is None:
        return None
    bearer = request.headers.get("authorization", "")
    given = (
        request.query_params.get("token")
        or request.headers.get("x-retrieval-token")
        or (bearer[7:] if bearer.lower().startswith("bearer ") else "")
        or request.cookies.get(TOKEN_COOKIE)
    )
    if not given:
        return 401, (
            "this server needs its access token: open the address `retrieval serve` printed "
            "(it ends in ?token=...), or send the header X-Retrieval-Token"
        )
    if not secrets.compare_digest(given.encode(), token.encode()):
        return 403, "wrong access token: use the one `retrieval serve` printed at start"
    return None


def _size_problem(request: Request, settings: Settings) -> tuple[int, str] | None:
    """(413, why) when the declared body is larger than an upload may be (refused before
    it is read)."""
    declared = request.headers.get("content-length", "")
    limit = settings.max_upload_bytes + 64 * 1024  # room for the form's other fields
    if declared.isdigit() and int(declared) > limit:
        return 413, too_large(settings)
    return None
