"""`retrieval serve`: a local web app over `retrieval.Index` -- the second face, beside cli/.

Like the CLI it imports only `retrieval`'s public names, its framework (FastAPI, Starlette,
Jinja2, uvicorn: their one home in this package) and the standard library. Pages are
rendered on the server from templates/, styled by static/style.css, with a little vanilla
JS (static/app.js) for drag-and-drop and paste; nothing is fetched from the internet.

    settings.py  what a server is started with (index, token, upload caps)
    app.py       the FastAPI app: pages, /api/, errors, the token check
    pages.py     the HTML pages;  api_routes.py  the JSON API under /api/
    forms.py     query parameters -> SearchFilter;  batcher.py  one thread embeds uploads
    server.py    uvicorn on 127.0.0.1 (the CLI's `serve` calls `run`)

This module imports none of them, so the CLI can say how to install the `web` extra when
FastAPI is missing.
"""

from __future__ import annotations

import importlib

#: Import name -> distribution name of what `retrieval serve` needs (the `web` extra).
REQUIREMENTS = {
    "fastapi": "fastapi",
    "uvicorn": "uvicorn",
    "jinja2": "jinja2",
    "multipart": "python-multipart",
}


def missing_requirements() -> list[str]:
    """The distributions of the `web` extra that cannot be imported here."""
    missing = []
    for name, dist in REQUIREMENTS.items():
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(dist)
    return missing
