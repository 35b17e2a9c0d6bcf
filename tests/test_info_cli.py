"""`retrieval info`: aligned lines with readable values for people, JSON for programs."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

from retrieval.cli.maintain import human_lines, human_size


@pytest.mark.parametrize(
    ("size", "shown"),
    [(0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (1_234_567, "1.2 MB"), (4.4e9, "4.4 GB")],
)
def test_human_size(size: int, shown: str) -> None:
    assert human_size(size) == shown


def test_human_lines_flatten_and_align() -> None:
    lines = human_lines(
        {
            "images": 3,
            "pretrained": False,
            "reduction": None,
            "index_policy": {"memory_bytes": None, "requested": "auto"},
            "index_params": {"type": "flat", "memory_bytes": 1344},
            "bytes_on_disk": 657423,
            "name": "a\x1b[2Jb",
        }
    )
    width = len("index_policy.memory_bytes")
    assert lines == [
        f"{'images':>{width}}: 3",
        f"{'pretrained':>{width}}: no",
        f"{'reduction':>{width}}: none",
        f"{'index_policy.memory_bytes':>{width}}: none",
        f"{'index_policy.requested':>{width}}: auto",
        f"{'index_params.type':>{width}}: flat",
        f"{'index_params.memory_bytes':>{width}}: 1.3 kB (1344 bytes)",
        f"{'bytes_on_disk':>{width}}: 657.4 kB (657423 bytes)",
        f"{'name':>{width}}: a\\x1b[2Jb",
    ]


def test_info_prints_no_python_reprs(tiny_index) -> None:
    result = run_cli("info", "--index", tiny_index.directory)
    assert result.exit_code == 0
    text = result.stdout
    for repr_only in ("{", "}", "None", "False", "True", "'"):
        assert repr_only not in text, (repr_only, text)
    lines = text.splitlines()
    assert len({line.index(": ") for line in lines}) == 1  # aligned
    fields = dict(line.strip().split(": ", 1) for line in lines)
    assert fields["images"] == "8" and fields["pretrained"] == "no"
    assert fields["index_params.type"] == "flat" and fields["reduction"] == "none"
    info = run_cli("info", "--index", tiny_index.directory, "--json").json()
    assert (
        fields["bytes_on_disk"]
        == f"{human_size(info['bytes_on_disk'])} ({info['bytes_on_disk']} bytes)"
    )
    assert fields["bytes_on_disk"].split()[1] in ("kB", "MB")


def test_info_json_keeps_its_structure(tiny_index) -> None:
    info = json.loads(run_cli("info", "--index", tiny_index.directory, "--json").stdout)
    assert isinstance(info["index_params"], dict) and info["index_params"]["type"] == "flat"
    assert info["index_policy"] == {"memory_bytes": None, "requested": "auto"}
    assert info["reduction"] is None and isinstance(info["bytes_on_disk"], int)
