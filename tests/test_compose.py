"""deploy/compose.yaml and deploy/nginx/convviz.conf: every reference resolves, without a Docker engine.

No Docker engine runs where these tests run, so the Compose file is parsed
and checked: the services, volumes, files and health checks it names exist
and agree with each other and with the nginx file (which Debian's nginx
checks with `nginx -t`). tests/test_topology.py runs the same topology
without Docker.
"""

import importlib.util
import re
import subprocess
from pathlib import Path

import pytest

from tools import topology

yaml = pytest.importorskip("yaml", reason="needs PyYAML to read deploy/compose.yaml")

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
NGINX_CONF = DEPLOY / "nginx" / "convviz.conf"
LONG_RUNNING = {"nginx", "app-1", "app-2", "worker", "redis"}


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def _volume_mounts(service):
    """(source, target, read-only) of a service's short-syntax volumes."""
    mounts = []
    for entry in service.get("volumes", []):
        source, target, *mode = entry.split(":")
        mounts.append((source, target, mode == ["ro"]))
    return mounts


def test_every_service_runs_an_image_and_the_long_running_ones_have_health_checks(compose):
    services = compose["services"]
    assert LONG_RUNNING <= set(services)
    for name, service in services.items():
        assert service.get("image") or service.get("build"), name
        if "build" in service:
            assert (COMPOSE.parent / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
    for name in LONG_RUNNING:
        test = services[name]["healthcheck"]["test"]
        assert test[0] == "CMD" and len(test) > 1, name
        if test[1] == "python":
            # The health check runs a module of this repository.
            assert test[2] == "-m" and importlib.util.find_spec(test[3]) is not None, test


def test_dependencies_name_services_that_can_satisfy_their_condition(compose):
    services = compose["services"]
    for name, service in services.items():
        for other, rule in service.get("depends_on", {}).items():
            assert other in services, f"{name} depends on a missing service {other}"
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services[other], f"{name} waits for {other} to be healthy"
            else:
                assert rule["condition"] == "service_completed_successfully"
                assert services[other].get("restart") == "no", f"{other} must end once"


def test_volumes_and_files_exist_and_the_cache_is_shared_by_replicas_and_workers(compose):
    services = compose["services"]
    declared = set(compose["volumes"])
    for name, service in services.items():
        for source, _, _ in _volume_mounts(service):
            if source.startswith("."):
                assert (COMPOSE.parent / source).is_file(), f"{name} mounts a missing {source}"
            else:
                assert source in declared, f"{name} mounts an undeclared volume {source}"
    for name in ("app-1", "app-2", "worker"):
        environment = services[name]["environment"]
        assert ("cache", environment["CONVVIZ_CACHE_DIR"], False) in _volume_mounts(services[name])
        host = re.fullmatch(r"redis://([\w-]+):(\d+)/\d+", environment["CONVVIZ_QUEUE_URL"])
        assert host and host.group(1) in services and host.group(2) in services[host.group(1)]["expose"]
    assert services["worker"]["command"] == ["python", "-m", "convviz_core.worker"]
    # What the frontend service copies is what nginx serves.
    alias = re.search(r"alias (\S+)/;", NGINX_CONF.read_text(encoding="utf-8")).group(1)
    assert ("frontend", alias, True) in _volume_mounts(services["nginx"])
    assert f"'{alias}'" in services["frontend"]["command"][-1]


def test_nginx_sends_each_app_replica_its_share_sticky_by_cookie(compose):
    text = NGINX_CONF.read_text(encoding="utf-8")
    servers = re.findall(r"^\s*server ([\w.-]+):(\d+)", text, re.MULTILINE)
    apps = {name for name in compose["services"] if name.startswith("app-")}
    assert {name for name, _ in servers} == apps
    for name, port in servers:
        assert port in compose["services"][name]["expose"]
    assert "hash $convviz_route consistent;" in text
    assert "client_max_body_size 200m;" in text
    assert re.search(r"location = /_stcore/metrics \{\s*return 403;", text)
    assert "proxy_set_header Upgrade $http_upgrade;" in text
    mount = ("./nginx/convviz.conf", "/etc/nginx/conf.d/default.conf", True)
    assert mount in _volume_mounts(compose["services"]["nginx"])


@pytest.mark.skipif(topology.NGINX is None, reason="needs nginx (apt-get install nginx-light)")
def test_nginx_accepts_the_configuration(tmp_path):
    config = topology.nginx_config(tmp_path, topology.free_port(), [topology.free_port(), topology.free_port()])
    command = topology.nginx_command(tmp_path, config)
    result = subprocess.run([*command[:-2], "-t"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
