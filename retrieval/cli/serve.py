"""`retrieval serve`: the web app (search by image, duplicates, the index) on a local port."""

from __future__ import annotations

import click

from .. import UsageError
from .common import (
    CONTEXT,
    device_option,
    index_option,
    max_megapixels_option,
    parse_memory,
    read_only,
)

INSTALL = "pip install 'retrieval[web]'"


@click.command("serve", context_settings=CONTEXT)
@index_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=8000,
    show_default=True,
    help="Port to listen on.",
)
@click.option("--open", "open_browser", is_flag=True, help="Open the app in a web browser.")
@click.option(
    "--token",
    default=None,
    metavar="T",
    help="Require this access token (?token=T once, or the X-Retrieval-Token header) "
    "[default: none on 127.0.0.1, a generated one on any other --host].",
)
@click.option(
    "--max-upload",
    default="50M",
    show_default=True,
    metavar="SIZE",
    callback=parse_memory,
    help="Largest query image accepted (bytes, or 512K, 50M...).",
)
@max_megapixels_option("Refuse larger query images.")
@device_option
@read_only
def serve_command(
    index_dir: str | None,
    host: str,
    port: int,
    open_browser: bool,
    token: str | None,
    max_upload: int,
    max_megapixels: float,
    device: str,
) -> None:
    """Serve a web app on HOST:PORT to search the index by example image (drop, paste or
    pick one), browse near-duplicate groups and see what the index holds; a JSON API is
    under /api/ (see /api/docs). It only reads the index: `retrieval index` may run
    beside it, and new images show up when it commits.

    \b
    Example:
      retrieval serve --open
      retrieval serve --index indexes/photos --port 8080
      retrieval serve --host 0.0.0.0 --token s3cret    # reachable from the network
    """
    from ..web import missing_requirements

    missing = missing_requirements()
    if missing:
        raise UsageError(f"retrieval serve needs {', '.join(missing)}: install them with {INSTALL}")
    from .. import Index  # here, not at the top: `retrieval --help` loads no index code
    from ..web.server import needs_token, new_token, run
    from ..web.settings import Settings

    index = Index(index_dir)
    index.info()  # no index: say so now, not on the first request
    if needs_token(host):
        token = token or new_token()
        click.echo(
            f"warning: listening on {host}: anyone on your network who has the token can see "
            "every indexed photo; keep the token secret",
            err=True,
        )
    settings = Settings(
        index_dir=index.directory,
        token=token,
        device=device,
        max_upload_bytes=max_upload,
        max_megapixels=max_megapixels,
    )
    run(settings, host, port, open_browser, notify=lambda line: click.echo(line, err=True))
