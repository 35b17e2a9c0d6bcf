"""The image formats Pillow knows, for filters that name a format (`--image-format`)."""

from __future__ import annotations


def pillow_formats() -> tuple[dict[str, str], frozenset[str]]:
    """Pillow's extension -> format map ('.jpg' -> 'JPEG') and its format names."""
    from PIL import Image

    extensions = Image.registered_extensions()  # also loads every plugin: Image.ID is full
    return extensions, frozenset(Image.ID) | frozenset(extensions.values())
