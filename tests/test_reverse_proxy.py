"""tools/nginx/convviz.conf with a real nginx in front of `streamlit run app.py`.

nginx serves Streamlit's frontend files from disk (compressed, cached for a
year: their names carry their content's hash) and passes everything else,
the websocket included, to Streamlit. The test proves it by freezing the
Streamlit process (SIGSTOP) while every file the app's HTML page names is
fetched through nginx: they all arrive, so none of them needed Streamlit.
Skipped where nginx is not installed (apt-get install nginx-light).
"""

import contextlib
import gzip
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tools import topology

ROOT = Path(__file__).resolve().parent.parent
NGINX_CONF = ROOT / "tools" / "nginx" / "convviz.conf"
STATIC_DIR = topology.static_dir()
NGINX = topology.NGINX
STARTUP_SECONDS = 120

pytestmark = pytest.mark.skipif(NGINX is None, reason="needs nginx (apt-get install nginx-light)")


def _wait_for(url, process, log_path):
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        assert process.poll() is None, "stopped:\n" + Path(log_path).read_text(errors="replace")
        try:
            return topology.http_get(url, timeout=2)
        except OSError:
            assert time.monotonic() < deadline, f"no answer from {url}:\n" + Path(log_path).read_text(errors="replace")
            time.sleep(0.3)


@contextlib.contextmanager
def _running(command, log_path, **options):
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **options)
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGCONT)
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _nginx_config(folder, listen_port, streamlit_port):
    """The shipped server block, pointed at this machine's Streamlit, inside a minimal nginx.conf."""
    return topology.nginx_config(folder, listen_port, [streamlit_port], NGINX_CONF)


def test_nginx_serves_the_frontend_and_passes_the_app_to_streamlit(tmp_path):
    streamlit_port, proxy_port = topology.free_port(), topology.free_port()
    streamlit_command = [
        sys.executable, "-m", "streamlit", "run", "app.py",
        f"--server.port={streamlit_port}", "--server.address=127.0.0.1", "--server.headless=true",
    ]
    config = _nginx_config(tmp_path, proxy_port, streamlit_port)
    nginx_command = topology.nginx_command(tmp_path, config)
    proxy = f"http://127.0.0.1:{proxy_port}"
    with _running(streamlit_command, tmp_path / "streamlit.log", cwd=ROOT) as server, \
            _running(nginx_command, tmp_path / "nginx.log") as nginx:
        _wait_for(f"http://127.0.0.1:{streamlit_port}/_stcore/health", server, tmp_path / "streamlit.log")
        # The app's HTML page comes from Streamlit, through nginx.
        status, _, html = _wait_for(f"{proxy}/grad_cam", nginx, tmp_path / "nginx.log")
        assert status == 200 and b"<html" in html.lower()
        frontend = sorted(set(re.findall(rb'(?:src|href)="\.?/?(static/[^"]+)"', html)))
        assert len(frontend) >= 2, html[:2000]
        # Streamlit frozen: the frontend still arrives, from nginx alone,
        # compressed and cacheable for good.
        os.kill(server.pid, signal.SIGSTOP)
        try:
            for path in frontend:
                status, headers, body = topology.http_get(f"{proxy}/{path.decode()}", headers={"Accept-Encoding": "gzip"})
                assert status == 200, path
                assert "immutable" in headers.get("Cache-Control", ""), (path, headers)
                if path.endswith(b".js"):
                    assert headers.get("Content-Encoding") == "gzip", (path, headers)
                    assert gzip.decompress(body) == (STATIC_DIR / path.decode().removeprefix("static/")).read_bytes()
            # ...while what only Streamlit answers waits for it.
            with pytest.raises(OSError):
                topology.http_get(f"{proxy}/_stcore/health", timeout=2)
        finally:
            os.kill(server.pid, signal.SIGCONT)
        assert topology.http_get(f"{proxy}/_stcore/health")[2] == b"ok"
        with pytest.raises(urllib.error.HTTPError, match="403"):
            topology.http_get(f"{proxy}/_stcore/metrics")
        # The websocket goes through: Streamlit accepts the upgrade.
        with socket.create_connection(("127.0.0.1", proxy_port), timeout=10) as connection:
            connection.sendall(
                b"GET /_stcore/stream HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                b"Sec-WebSocket-Protocol: streamlit\r\n\r\n"
            )
            answer = connection.recv(4096)
        assert answer.startswith(b"HTTP/1.1 101"), answer
