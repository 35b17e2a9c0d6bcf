"""Which index folder a shared Milvus collection belongs to, so that a copy of the folder is
refused before it writes to, or trusts, the collection.

A collection on a Milvus server, or in a Lite file outside the index, is shared by every copy
of the index folder: the copy has the same catalogue id, so the same collection name, at the
same URI. (A Lite file inside the index is copied with it: nothing is shared, nothing here
applies.) The collection's properties record

    retrieval.owner   the absolute path of the folder that last wrote it (bytes as hex)
    retrieval.token   a random token, a new one at each write

and the catalogue keeps the last two tokens it wrote (the older one covers a writer stopped
between writing the catalogue and the collection). A folder may use the collection when

  - the recorded owner is this folder, or no longer holds this catalogue (the index was moved,
    or the original removed; a writer then records itself), and
  - the collection's token is one of the catalogue's (no other copy has written it since).

So a copy on the same machine is refused at once (its original is still at the recorded
path), reading or writing; of two copies that cannot see each other (on two machines, or a
copy whose original was then moved), the first to write keeps the collection and the other is
refused from then on. Collections made before this have neither property: they are accepted,
and claimed at their next write.
"""

from __future__ import annotations

import os
import secrets

from .. import defaults
from .catalog import Catalog

#: The collection's properties.
OWNER, TOKEN = "retrieval.owner", "retrieval.token"
#: The catalogue meta key: its last tokens, newest first, space-separated.
TOKENS_KEY = "milvus_tokens"


def encode(directory: str) -> str:
    return os.fsencode(directory).hex()


def decode(text: str | None) -> str | None:
    try:
        return os.fsdecode(bytes.fromhex(text)) if text else None
    except ValueError:
        return None


def same_folder(first: str, second: str) -> bool:
    """Whether two paths name one folder (through a symlink, say)."""
    try:
        return os.path.samefile(first, second)
    except OSError:
        return False


def holds_catalogue(directory: str, catalog_id: str) -> bool:
    """Whether `directory` is an index whose catalogue has the id `catalog_id`."""
    path = os.path.join(directory, defaults.CATALOG_FILE)
    if not catalog_id or not os.path.isfile(path):
        return False
    # any failure to read it (damaged, locked, unreadable): it cannot be told to be this one
    try:
        catalog = Catalog(path, writer=False)
    except Exception:
        return False
    try:
        return catalog.catalog_id() == catalog_id
    except Exception:
        return False
    finally:
        catalog.close()


def tokens(catalog: Catalog) -> list[str]:
    """The catalogue's last tokens, newest first."""
    return (catalog.get_meta(TOKENS_KEY) or "").split()


def renewed(catalog: Catalog) -> str:
    """A new token, recorded in the catalogue (before the collection gets it)."""
    token = secrets.token_hex(8)
    catalog.set_meta(TOKENS_KEY, " ".join([token, *tokens(catalog)[:1]]))
    return token


def refusal(properties: dict[str, str], here: str, catalog_id: str, mine: list[str]) -> str | None:
    """Why the index folder `here` may not use a collection with these `properties` (it is a
    copy of the folder that owns it), or None. `mine`: the catalogue's tokens, read after the
    properties (a writer records a token in its catalogue first)."""
    owner = decode(properties.get(OWNER))
    if owner and not same_folder(owner, here) and holds_catalogue(owner, catalog_id):
        return f"it is a copy of the index at {owner}"
    token = properties.get(TOKEN)
    if token and token not in mine:
        if owner and same_folder(owner, here):
            return (
                "the collection was written after this folder's catalogue (was the folder "
                "restored from a backup, or copied from another machine?)"
            )
        by = f" ({owner})" if owner else ""
        return f"another copy of it{by} has written the collection since it was copied"
    return None


def refused(reason: str, here: str, uri: str, name: str) -> str:
    """The one line for a copy: what is wrong and what to do."""
    return (
        f"the index at {here} cannot use the Milvus collection {name} at {uri}: {reason}, "
        "and copies of an index share its collection; to make this copy an index of its "
        f"own: `retrieval export --index {here} -o FILE.parquet`, then "
        f"`retrieval import FILE.parquet --index NEW_DIR --vectors milvus:{uri}`"
    )
