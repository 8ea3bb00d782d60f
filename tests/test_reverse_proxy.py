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
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import streamlit

ROOT = Path(__file__).resolve().parent.parent
NGINX_CONF = ROOT / "tools" / "nginx" / "convviz.conf"
STATIC_DIR = Path(streamlit.__file__).parent / "static" / "static"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
STARTUP_SECONDS = 120

pytestmark = pytest.mark.skipif(NGINX is None, reason="needs nginx (apt-get install nginx-light)")


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url, headers=None, timeout=5):
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, dict(response.headers), response.read()


def _wait_for(url, process, log_path):
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        assert process.poll() is None, "stopped:\n" + Path(log_path).read_text(errors="replace")
        try:
            return _get(url, timeout=2)
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
    server_block = NGINX_CONF.read_text(encoding="utf-8")
    server_block = server_block.replace("STREAMLIT_STATIC_DIR", str(STATIC_DIR))
    server_block = server_block.replace("server 127.0.0.1:8501;", f"server 127.0.0.1:{streamlit_port};")
    server_block = re.sub(r"listen 80;", f"listen 127.0.0.1:{listen_port};", server_block)
    mime_types = Path("/etc/nginx/mime.types")
    config = folder / "nginx.conf"
    config.write_text(
        f"""
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log;
events {{ worker_connections 256; }}
http {{
    {"include " + str(mime_types) + ";" if mime_types.exists() else ""}
    access_log {folder}/access.log;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
{server_block}
}}
""",
        encoding="utf-8",
    )
    return config


def test_nginx_serves_the_frontend_and_passes_the_app_to_streamlit(tmp_path):
    streamlit_port, proxy_port = _free_port(), _free_port()
    streamlit_command = [
        sys.executable, "-m", "streamlit", "run", "app.py",
        f"--server.port={streamlit_port}", "--server.address=127.0.0.1", "--server.headless=true",
    ]
    config = _nginx_config(tmp_path, proxy_port, streamlit_port)
    nginx_command = [NGINX, "-p", str(tmp_path), "-c", str(config), "-g", "daemon off;"]
    if os.geteuid() == 0:
        nginx_command[-1] += " user root;"
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
                status, headers, body = _get(f"{proxy}/{path.decode()}", headers={"Accept-Encoding": "gzip"})
                assert status == 200, path
                assert "immutable" in headers.get("Cache-Control", ""), (path, headers)
                if path.endswith(b".js"):
                    assert headers.get("Content-Encoding") == "gzip", (path, headers)
                    assert gzip.decompress(body) == (STATIC_DIR / path.decode().removeprefix("static/")).read_bytes()
            # ...while what only Streamlit answers waits for it.
            with pytest.raises(OSError):
                _get(f"{proxy}/_stcore/health", timeout=2)
        finally:
            os.kill(server.pid, signal.SIGCONT)
        assert _get(f"{proxy}/_stcore/health")[2] == b"ok"
        with pytest.raises(urllib.error.HTTPError, match="403"):
            _get(f"{proxy}/_stcore/metrics")
        # The websocket goes through: Streamlit accepts the upgrade.
        with socket.create_connection(("127.0.0.1", proxy_port), timeout=10) as connection:
            connection.sendall(
                b"GET /_stcore/stream HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                b"Sec-WebSocket-Protocol: streamlit\r\n\r\n"
            )
            answer = connection.recv(4096)
        assert answer.startswith(b"HTTP/1.1 101"), answer
