"""ConvViz as a course runs it, on one machine without Docker: Redis, RQ workers, app replicas, nginx.

The same topology as `deploy/compose.yaml`, from Debian's packages
(`redis-server`, `nginx-light`): the tests (tests/test_job_queue.py,
tests/test_topology.py) and the classroom bench (`bench/bench_classroom.py
--topology`) start it with these functions, and a person can start it by
hand:

    python tools/topology.py --replicas 2 --workers 1 --port 8080

Every process runs in its own process group with its output in a log file
of the given folder, and is stopped (SIGTERM, then SIGKILL) when its context
ends.
"""

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NGINX_CONF = ROOT / "deploy" / "nginx" / "convviz.conf"
REDIS_SERVER = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
STARTUP_SECONDS = 120


def free_port():
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Process:
    """A started process and its log file."""

    def __init__(self, name, command, log_path, **options):
        self.name = name
        self.command = command
        self.log_path = Path(log_path)
        self.options = options
        self.popen = None
        self.start()

    def start(self):
        """Starts (or starts again) the process, appending to its log."""
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **self.options
            )

    @property
    def pid(self):
        return self.popen.pid

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    def log(self):
        """The end of the process's log."""
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def kill(self, signal_number=signal.SIGKILL):
        """Sends a signal to the process's group (SIGKILL: it dies at once, as a crashed machine would)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal_number)
        if signal_number in (signal.SIGKILL, signal.SIGTERM):
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=20)

    def stop(self):
        """SIGTERM, then SIGKILL after 20 s."""
        if self.popen is None or self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGCONT)
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()


@contextlib.contextmanager
def running(name, command, log_path, **options):
    """Runs a command for the length of a `with` block; yields its `Process`."""
    process = Process(name, command, log_path, **options)
    try:
        yield process
    finally:
        process.stop()


def wait_until(check, process, what, timeout=STARTUP_SECONDS):
    """Calls `check()` until it returns a true value (which is returned); fails if `process` stops first."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and not process.alive():
            raise RuntimeError(f"{process.name} stopped before {what}:\n{process.log()}")
        with contextlib.suppress(Exception):
            value = check()
            if value:
                return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"No {what} within {timeout} s." + (f"\n{process.log()}" if process else ""))
        time.sleep(0.2)


def http_get(url, headers=None, timeout=5):
    """(status, headers, body) of a GET."""
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, dict(response.headers), response.read()


# --- Redis ---------------------------------------------------------------------------


def redis_command(port, folder):
    """redis-server on 127.0.0.1:port, in memory only (a restart loses everything, as the tests want)."""
    if REDIS_SERVER is None:
        raise FileNotFoundError("redis-server is not installed (apt-get install redis-server).")
    return [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(folder), "--protected-mode", "no"]


@contextlib.contextmanager
def redis_server(folder, port=None):
    """A Redis server for the length of a `with` block; yields (Process, URL)."""
    import redis

    port = port or free_port()
    with running("redis-server", redis_command(port, folder), Path(folder) / "redis.log") as process:
        url = f"redis://127.0.0.1:{port}/0"
        wait_until(lambda: redis.Redis.from_url(url, socket_timeout=1).ping(), process, "answer from Redis", 30)
        yield process, url


def restart_redis(process, url):
    """Stops a Redis server started by `redis_server` and starts it again (empty) on the same port."""
    import redis

    process.stop()
    process.start()
    wait_until(lambda: redis.Redis.from_url(url, socket_timeout=1).ping(), process, "answer from Redis", 30)


# --- Workers and replicas -------------------------------------------------------------


def environment(url, cache_dir, **extra):
    """The environment of ConvViz's processes: the queue, the shared cache, this checkout on the path."""
    env = dict(os.environ)
    env.update({
        "CONVVIZ_QUEUE_URL": url,
        "CONVVIZ_CACHE_DIR": str(cache_dir),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")])),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    })
    env.update({key: str(value) for key, value in extra.items()})
    return env


def start_worker(folder, url, cache_dir, name, preload=True, **env):
    """Starts `python -m convviz_core.worker`; returns its `Process` (not waited for)."""
    command = [sys.executable, "-m", "convviz_core.worker", "--url", url, "--name", name]
    if not preload:
        command.append("--no-preload")
    return Process(name, command, Path(folder) / f"{name}.log", cwd=ROOT, env=environment(url, cache_dir, **env))


def wait_for_workers(url, count, timeout=STARTUP_SECONDS, process=None):
    """Waits until `count` workers have reported in to Redis."""
    from convviz_core import job_queue

    connection = job_queue.connect(url)
    wait_until(lambda: job_queue.live_workers(connection) >= count, process, f"{count} workers", timeout)


def start_replica(folder, url, cache_dir, name, port, **env):
    """Starts one `streamlit run app.py` replica on 127.0.0.1:port; returns its `Process` (not waited for)."""
    command = [
        sys.executable, "-m", "streamlit", "run", "app.py", f"--server.port={port}", "--server.address=127.0.0.1",
        "--server.headless=true", "--browser.gatherUsageStats=false",
    ]
    return Process(name, command, Path(folder) / f"{name}.log", cwd=ROOT, env=environment(url, cache_dir, **env))


def wait_for_http(url, process=None, timeout=STARTUP_SECONDS):
    """Waits until a GET of `url` answers; returns (status, headers, body)."""
    return wait_until(lambda: http_get(url, timeout=2), process, f"answer from {url}", timeout)


# --- nginx ---------------------------------------------------------------------------


def static_dir():
    """Streamlit's frontend files (nginx serves them)."""
    import streamlit

    return Path(streamlit.__file__).parent / "static" / "static"


def nginx_config(folder, listen_port, replica_ports, config_file=NGINX_CONF):
    """An nginx server file (deploy/nginx/convviz.conf, or tools/nginx/convviz.conf for one server) with these
    replicas, inside a minimal nginx.conf of `folder`; returns its path."""
    server_block = Path(config_file).read_text(encoding="utf-8")
    # The frontend folder: the deploy file's volume, or tools/nginx/convviz.conf's placeholder.
    for placeholder in ("/srv/streamlit-static", "STREAMLIT_STATIC_DIR"):
        server_block = server_block.replace(placeholder, str(static_dir()))
    servers = "".join(f"    server 127.0.0.1:{port} max_fails=0;\n" for port in replica_ports)
    # The replicas take the place of the file's `server` lines, in its upstream block.
    upstream = re.search(r"upstream convviz_streamlit \{.*?\n\}", server_block, re.DOTALL).group(0)
    lines = [line for line in upstream.splitlines(keepends=True) if not line.strip().startswith("server ")]
    lines.insert(-1, servers)
    server_block = server_block.replace(upstream, "".join(lines))
    server_block = re.sub(r"listen 80;", f"listen 127.0.0.1:{listen_port};", server_block)
    mime_types = Path("/etc/nginx/mime.types")
    folder = Path(folder)
    config = folder / "nginx.conf"
    config.write_text(
        f"""
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log;
events {{ worker_connections 2048; }}
http {{
    {"include " + str(mime_types) + ";" if mime_types.exists() else ""}
    # Which replica served each request, and for which route cookie (stickiness is checked from this).
    log_format convviz_route '$request_uri $status upstream=$upstream_addr route=$cookie_convviz_route';
    access_log {folder}/access.log convviz_route;
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


def upstreams_by_route(folder):
    """{route cookie: set of replica addresses} from the access log of `nginx_config` (requests with a cookie)."""
    routes = {}
    path = Path(folder) / "access.log"
    if not path.exists():
        return routes
    for line in path.read_text(errors="replace").splitlines():
        found = re.search(r"upstream=(\S+) route=(\S*)$", line)
        if found and found.group(2) and found.group(1) != "-":
            # A failed try and the next server read "a:1, b:2": the last one answered.
            routes.setdefault(found.group(2), set()).add(found.group(1).split(",")[-1].strip())
    return routes


def nginx_command(folder, config):
    if NGINX is None:
        raise FileNotFoundError("nginx is not installed (apt-get install nginx-light).")
    command = [NGINX, "-p", str(folder), "-c", str(config), "-g", "daemon off;"]
    if os.geteuid() == 0:
        command[-1] += " user root;"
    return command


class Topology:
    """The running processes of `topology()` and their addresses."""

    def __init__(self, folder, cache_dir):
        self.folder = Path(folder)
        self.cache_dir = Path(cache_dir)
        self.redis = None
        self.queue_url = None
        self.workers = []
        self.replicas = []  # (Process, port)
        self.nginx = None
        self.url = None

    def add_worker(self, preload=True):
        """Starts one more worker; returns its `Process`."""
        worker = start_worker(self.folder, self.queue_url, self.cache_dir, f"worker-{len(self.workers) + 1}",
                              preload=preload)
        self.workers.append(worker)
        return worker

    def processes(self):
        return [process for process in [self.nginx, *(p for p, _ in self.replicas), *self.workers, self.redis]
                if process is not None]


@contextlib.contextmanager
def topology(folder, replicas=2, workers=1, port=None, cache_dir=None, preload=True, replica_env=None):
    """Redis, `workers` workers, `replicas` app replicas and nginx in front, for a `with` block.

    Args:
        folder: Where the logs, nginx's files and (by default) the shared cache go.
        replicas: How many `streamlit run app.py` processes.
        workers: How many `python -m convviz_core.worker` processes.
        port: nginx's port (default: a free one).
        cache_dir: The cache folder every process shares (default: folder/cache).
        preload: Whether workers load the built-in models at start.
        replica_env: Extra environment of the replicas.

    Yields:
        A `Topology`, once nginx answers and every replica and worker is ready.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cache_dir) if cache_dir is not None else folder / "cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    result = Topology(folder, cache_dir)
    try:
        with redis_server(folder) as (redis_process, url):
            result.redis, result.queue_url = redis_process, url
            for _ in range(workers):
                result.add_worker(preload=preload)
            for index in range(replicas):
                replica_port = free_port()
                result.replicas.append((start_replica(folder, url, cache_dir, f"replica-{index + 1}", replica_port,
                                                      **(replica_env or {})), replica_port))
            for process, replica_port in result.replicas:
                wait_for_http(f"http://127.0.0.1:{replica_port}/_stcore/health", process)
            port = port or free_port()
            config = nginx_config(folder, port, [replica_port for _, replica_port in result.replicas])
            result.nginx = Process("nginx", nginx_command(folder, config), folder / "nginx.log")
            result.url = f"http://127.0.0.1:{port}"
            wait_for_http(f"{result.url}/_stcore/health", result.nginx)
            wait_for_workers(url, workers, process=result.workers[0] if result.workers else None)
            yield result
    finally:
        for process in result.processes():
            if process is not result.redis:
                process.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(description="Start ConvViz's course topology on this machine (Ctrl-C stops it).")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--folder", default="/tmp/convviz-topology")
    args = parser.parse_args(argv)
    with topology(args.folder, args.replicas, args.workers, args.port) as started:
        sys.stderr.write(f"ConvViz at {started.url} (logs in {args.folder}); Ctrl-C stops it.\n")
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(1)


if __name__ == "__main__":
    main()
