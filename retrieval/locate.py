"""Which index a command uses when the user names none, found the way git finds `.git`.

Commands that read an index (search, info, export, check, optimize, prune):

  1. `--index DIR` (the library: `Index(DIR)`)
  2. `$RETRIEVAL_INDEX`
  3. the nearest `indexes/default` holding a catalogue, looking in the working directory,
     then its parent, and so on up to the filesystem root
  4. the per-user default, `<data folder>/retrieval/indexes/default`, where the data folder
     is `$XDG_DATA_HOME` (else `~/.local/share`) on Linux and other Unixes,
     `~/Library/Application Support` on macOS, `%LOCALAPPDATA%` on Windows

Commands that may create one (index, import) take 1-3 the same way, then
  3b. `./indexes/default` when the working directory has an `indexes/` folder (the project
      layout, as in this repository)
  4. the per-user default.

So an index is found again from any folder: it lies either under the folder a command runs
in (or one of its parents), or in the one per-user place.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from . import defaults

#: Why a location was chosen, as `info` shows it ("located_by").
BY_OPTION = "--index"
BY_ENV = f"${defaults.INDEX_ENV}"
BY_WALK = "found by walking up from {cwd}"
BY_PROJECT = "./indexes/default (the working directory has an indexes/ folder)"
BY_USER = "per-user default"


@dataclass(frozen=True)
class Location:
    """An index directory (absolute) and why it was chosen (one of the BY_* texts)."""

    directory: str
    reason: str


def locate(
    explicit: str | os.PathLike[str] | None = None,
    *,
    creating: bool = False,
    cwd: str | None = None,
    environ: Mapping[str, str] | None = None,
    platform: str | None = None,
) -> Location:
    """The index to use (see the module docstring); `creating` for commands that may make
    one. `cwd`, `environ` and `platform` (`sys.platform` values) default to this process's.
    Looks at the disk only; creates nothing."""
    environ = os.environ if environ is None else environ
    cwd = os.path.abspath(cwd or os.getcwd())
    if explicit:
        return Location(os.path.abspath(os.path.join(cwd, os.fspath(explicit))), BY_OPTION)
    if environ.get(defaults.INDEX_ENV):
        named = os.path.join(cwd, environ[defaults.INDEX_ENV])
        return Location(os.path.abspath(named), BY_ENV)
    found = walk_up(cwd)
    if found is not None:
        return Location(found, BY_WALK.format(cwd=cwd))
    if creating and os.path.isdir(os.path.join(cwd, os.path.dirname(defaults.INDEX_DIR))):
        return Location(os.path.join(cwd, defaults.INDEX_DIR), BY_PROJECT)
    return Location(user_index_dir(environ, platform), BY_USER)


def walk_up(start: str) -> str | None:
    """The nearest `indexes/default` holding a catalogue at or above `start`, or None."""
    folder = os.path.abspath(start)
    while True:
        candidate = os.path.join(folder, defaults.INDEX_DIR)
        if os.path.isfile(os.path.join(candidate, defaults.CATALOG_FILE)):
            return candidate
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def user_index_dir(environ: Mapping[str, str] | None = None, platform: str | None = None) -> str:
    """The per-user default index: `<data folder>/retrieval/indexes/default`."""
    return os.path.join(user_data_dir(environ, platform), "retrieval", defaults.INDEX_DIR)


def user_data_dir(environ: Mapping[str, str] | None = None, platform: str | None = None) -> str:
    """This platform's per-user data folder (XDG on Linux, as the XDG spec says an empty
    or relative $XDG_DATA_HOME is ignored)."""
    environ = os.environ if environ is None else environ
    platform = platform or sys.platform
    home = environ.get("HOME") or os.path.expanduser("~")
    if platform == "win32":
        local = environ.get("LOCALAPPDATA")
        return local or os.path.join(environ.get("USERPROFILE") or home, "AppData", "Local")
    if platform == "darwin":
        return os.path.join(home, "Library", "Application Support")
    xdg = environ.get("XDG_DATA_HOME", "")
    return xdg if os.path.isabs(xdg) else os.path.join(home, ".local", "share")
