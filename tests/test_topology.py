"""The course topology on one machine, without Docker: Redis, a worker, two app replicas, nginx in front.

What deploy/compose.yaml runs, from Debian's packages (tools/topology.py):
a student (the protocol client of bench/streamlit_client.py) opens the app
through nginx, gets a route cookie and stays on one replica; the Filters
page's atlas is computed by the worker, not by the replica, and lands in the
shared cache; a student on the other replica gets the same atlas from that
cache without a second computation. Skipped where redis-server or nginx is
not installed (apt-get install redis-server nginx-light).
"""

import asyncio
import sys
from pathlib import Path

import pytest

from convviz_core import job_queue
from tools import topology

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from streamlit_client import MAIN, StreamlitClient  # noqa: E402

PAGE_SECONDS = 300
ROUTE_COOKIE = "convviz_route"

pytestmark = [
    pytest.mark.skipif(topology.REDIS_SERVER is None, reason="needs redis-server (apt-get install redis-server)"),
    pytest.mark.skipif(topology.NGINX is None, reason="needs nginx (apt-get install nginx-light)"),
]


async def open_filters(url, cookies=None):
    """A student who opens the small convnet's Filters page; returns (what the page says, cookies) once the grid is shown."""
    client = StreamlitClient(url)
    client.query_string = "model=small-convnet"
    client.cookies.update(cookies or {})
    await client.connect(timeout=PAGE_SECONDS)
    await client.run()
    await client.wait_until(lambda: client.pictures(MAIN) or client.errors(), PAGE_SECONDS)
    await client.open_page("Filters")
    await client.wait_until(
        lambda: any(picture.caption.startswith("Filters ") for picture in client.pictures(MAIN)) or client.errors(),
        PAGE_SECONDS,
    )
    assert not client.errors(), client.errors()
    texts = " ".join(client.texts(MAIN))
    await client.close()
    return texts, client.cookies


async def route_to_other_replica(url, folder, taken):
    """A route cookie that nginx sends to another replica than `taken` (new visitors get random ones)."""
    for _ in range(20):
        client = StreamlitClient(url)
        await client.connect(timeout=PAGE_SECONDS)
        await client.close()
        route = client.cookies[ROUTE_COOKIE]
        await asyncio.sleep(0.2)
        upstreams = topology.upstreams_by_route(folder).get(route, set())
        if upstreams and upstreams != {taken}:
            return route, upstreams.pop()
    raise AssertionError("20 new visitors all reached the same replica")


def job_records(connection):
    return [connection.hgetall(key) for key in connection.keys(job_queue.job_key("*"))]


def test_students_stay_on_their_replica_and_share_the_atlas_a_worker_computed(tmp_path):
    with topology.topology(tmp_path, replicas=2, workers=1) as started:
        connection = job_queue.connect(started.queue_url)

        texts, cookies = asyncio.run(open_filters(started.url))
        route = cookies[ROUTE_COOKIE]
        assert "Computed in" in texts
        # Every request of this browser (page, websocket, pictures) reached one replica.
        upstreams = topology.upstreams_by_route(tmp_path)
        assert len(upstreams[route]) == 1, upstreams
        served_by = next(iter(upstreams[route]))
        # The worker computed the atlases (the grid, and the large pattern), into the shared cache.
        records = job_records(connection)
        assert records and {record[b"worker"] for record in records} == {b"worker-1"}
        assert {record[b"outcome"] for record in records} == {b"ok"}
        assert list((started.cache_dir / "atlases").glob("small-convnet-*.npy"))

        other_route, other = asyncio.run(route_to_other_replica(started.url, tmp_path, served_by))
        texts, _ = asyncio.run(open_filters(started.url, {ROUTE_COOKIE: other_route}))
        assert topology.upstreams_by_route(tmp_path)[other_route] == {other}
        # The other replica read the atlas from the shared cache: no second job.
        assert "Patterns from the shared cache" in texts
        assert len(job_records(connection)) == len(records)
        # The worker held no session: every replica answers nginx's health check.
        for process, port in started.replicas:
            assert process.alive() and topology.http_get(f"http://127.0.0.1:{port}/_stcore/health")[0] == 200
