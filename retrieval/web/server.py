"""Run the app with uvicorn: the address, the token, the browser."""

from __future__ import annotations

import secrets
import threading
import webbrowser
from collections.abc import Callable

import uvicorn

from .app import create_app
from .settings import Settings

#: Hosts that only this machine can reach.
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def needs_token(host: str) -> bool:
    return host not in LOOPBACK


def new_token() -> str:
    return secrets.token_urlsafe(18)


def address(host: str, port: int, token: str | None) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def run(
    settings: Settings,
    host: str,
    port: int,
    open_browser: bool = False,
    notify: Callable[[str], None] = print,
) -> None:
    """Serve until interrupted; `notify` gets the address (and warnings) to print."""
    app = create_app(settings)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    url = address(host, port, settings.token)
    if open_browser:
        threading.Thread(target=_open_when_up, args=(server, url), daemon=True).start()
    notify(f"serving {settings.index_dir} at {url} (Ctrl-C to stop)")
    server.run()


def _open_when_up(server: uvicorn.Server, url: str) -> None:
    for _ in range(600):
        if server.started:
            webbrowser.open(url)
            return
        threading.Event().wait(0.1)
