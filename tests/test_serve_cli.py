"""`retrieval serve` as a command: its help, its refusal without an index, and the token and
warning it gives when it listens beyond 127.0.0.1 (tested on 127.0.0.2: loopback, so
nothing here is reachable from the network)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from _procs import free_port
from conftest import TINY, make_photos, run_cli, run_module

pytest.importorskip("fastapi", reason="the web extra is not installed: pip install '.[web]'")


def test_serve_has_help_with_an_example() -> None:
    result = run_module("serve", "--help")
    assert result.returncode == 0
    assert "Example:" in result.stdout and "--token" in result.stdout


def test_serve_without_an_index_says_so_in_one_line(tmp_path) -> None:
    result = run_cli("serve", "--index", tmp_path / "none")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no index at ")
    assert len(result.stderr.strip().splitlines()) == 1


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_off_loopback_it_warns_and_requires_a_generated_token(tmp_path) -> None:
    make_photos(tmp_path / "photos", range(3))
    assert (
        run_cli("index", tmp_path / "photos", "--index", tmp_path / "index", *TINY).exit_code == 0
    )
    host = "127.0.0.2"
    try:
        port = free_port(host)
    except OSError:
        pytest.skip("127.0.0.2 is not a loopback address here")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "retrieval",
            "serve",
            "--index",
            str(tmp_path / "index"),
            "--host",
            host,
            "--port",
            str(port),
        ],  # fmt: skip
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    try:
        lines = [process.stderr.readline() for _ in range(2)]
        assert lines[0].startswith(f"warning: listening on {host}: anyone on your network")
        token = re.search(r"\?token=(\S+)", lines[1]).group(1)
        base = f"http://{host}:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                status, body = _get(base + "/api/info")
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        assert status == 401 and "access token" in body["error"]
        assert _get(base + "/api/info?token=wrong")[0] == 403
        status, body = _get(base + "/api/info", {"X-Retrieval-Token": token})
        assert status == 200 and body["images"] == 3
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_without_the_web_extra_it_says_how_to_install_it(tmp_path) -> None:
    code = (
        "import sys; sys.modules['fastapi'] = None; sys.modules['multipart'] = None\n"
        "from retrieval.cli import main; main(sys.argv[1:])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "serve", "--index", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr == (
        "error: retrieval serve needs fastapi, python-multipart: install them with "
        "pip install 'retrieval[web]'\n"
    )
