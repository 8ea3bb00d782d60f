"""Measures whether a ConvViz server's memory stays bounded while a visitor uploads photo after photo.

    python bench/bench_memory.py [--uploads 100] [--warm-up 12] [--cache-dir DIR]

Starts `streamlit run app.py` on a free localhost port (with a temporary
folder of its own) and drives it with Debian's chromium through Playwright,
as one visitor on the default model (EfficientNet-Lite0): every upload is a
different generated photo, and the uploads go round the three views
(Activations, Grad-CAM, Filters), so each view computes for each photo.

After the warm-up (the model loaded, every graph traced, each view seen with
a few photos) the server's resident memory (RSS, from psutil or
/proc/<pid>/status) is the baseline; then `--uploads` more photos follow and
the growth is printed: the goal is at most 10%. Every cache of the app has a
bounded number of entries, so after enough photos the memory must level off.

The script also checks that no upload piles up on disk: it lists what the
server left in its temporary folder, where uploaded model files go while they
are checked (image uploads stay in memory).

The Filters view opens on the default atlas. For a built-in model it comes
from the disk cache (`$CONVVIZ_CACHE_DIR/atlases`), or is computed once during
the warm-up (a few minutes on two cores); `--cache-dir` points elsewhere.
"""

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The end-to-end test's helpers: how to wait for the server and drive the pages.
from tests.test_e2e_browser import (  # noqa: E402
    chromium_page,
    free_port,
    open_page,
    playwright_api,
    upload_photo,
    wait_for_app_idle,
    wait_until_healthy,
)

GOAL_GROWTH = 0.10
VIEWS = [
    ("Activations", "Dead channels"),
    ("Grad-CAM", "Heatmap × 0.40 + image"),
    ("Filters", "Where it fires on your image"),
]
# A warm-up may compute the default filter atlas; later runs take seconds.
FIRST_RUN_SECONDS = 1200
RUN_SECONDS = 300


def resident_bytes(pid):
    """The resident memory (RSS) of a process, in bytes."""
    try:
        import psutil
    except ImportError:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError(f"No VmRSS line in /proc/{pid}/status.") from None
    return psutil.Process(pid).memory_info().rss


def streamlit_accounting(base_url):
    """What Streamlit says its caches, media files, uploads and session states hold, in bytes.

    Reads the server's own `/_stcore/metrics` (family `cache_memory_bytes`).

    Returns:
        {(cache type, cache name): bytes}.
    """
    url = f"{base_url}/_stcore/metrics?families=cache_memory_bytes"
    with urllib.request.urlopen(url, timeout=60) as response:
        text = response.read().decode("utf-8")
    held = collections.Counter()
    for match in re.finditer(r'^cache_memory_bytes\{cache_type="([^"]*)",cache="([^"]*)"\} (\d+)', text, re.MULTILINE):
        cache_type, name, size = match.groups()
        # Per-session entries carry the session's id: count them together.
        held[cache_type, re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", "<session>", name)] += int(size)
    return held


def write_photos(folder, count, seed=0):
    """Writes `count` different photo-sized JPEGs (640x480): coloured blobs and shapes on smooth noise.

    Returns:
        The paths, in order.
    """
    paths = []
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        low = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        image = cv2.resize(low, (640, 480), interpolation=cv2.INTER_CUBIC)
        for _ in range(4):
            colour = tuple(int(value) for value in rng.integers(0, 256, 3))
            centre = (int(rng.integers(60, 580)), int(rng.integers(60, 420)))
            if rng.random() < 0.5:
                cv2.circle(image, centre, int(rng.integers(20, 90)), colour, -1)
            else:
                half = int(rng.integers(20, 90))
                cv2.rectangle(image, (centre[0] - half, centre[1] - half), (centre[0] + half, centre[1] + half), colour, -1)
        noisy = np.clip(image.astype(int) + rng.integers(-12, 13, image.shape), 0, 255).astype(np.uint8)
        path = Path(folder) / f"bench-{index:03d}.jpg"
        path.write_bytes(cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
        paths.append(path)
    return paths


def files_under(folder):
    """Every file below a folder, with its size."""
    found = {}
    for directory, _, names in os.walk(folder):
        for name in names:
            path = Path(directory, name)
            try:
                found[str(path.relative_to(folder))] = path.stat().st_size
            except OSError:
                pass
    return found


def start_server(port, log, temporary_folder, cache_dir):
    """`streamlit run app.py` on 127.0.0.1:port, with its own temporary folder."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TMPDIR": str(temporary_folder)}
    if cache_dir is not None:
        env["CONVVIZ_CACHE_DIR"] = str(cache_dir)
    command = [
        sys.executable, "-m", "streamlit", "run", "app.py",
        "--server.port", str(port),
        "--server.address", "127.0.0.1",
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
    ]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


class Visitor:
    """One browser tab on the app, which knows which view it has open."""

    def __init__(self, page):
        self.page = page
        self.view = VIEWS[0][0]  # The app opens on Activations.

    def show(self, view, photo, timeout_seconds=RUN_SECONDS):
        """Opens a view (if another is open), uploads a photo and waits until the view has drawn it."""
        title, ready_text = view
        page = self.page
        if title != self.view:
            open_page(page, title)
            wait_for_app_idle(page, timeout_seconds)
            self.view = title
        upload_photo(page, photo)
        page.get_by_text(f"Image: {photo.name}").first.wait_for(timeout=timeout_seconds * 1000)
        page.get_by_text(ready_text).first.wait_for(timeout=timeout_seconds * 1000)
        wait_for_app_idle(page, timeout_seconds)
        problems = page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]')
        if problems.count():
            raise RuntimeError(f"{title} with {photo.name} shows an error: {problems.first.inner_text()}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=100, help="photos uploaded after the warm-up")
    parser.add_argument("--warm-up", type=int, default=12, help="photos uploaded before the baseline")
    parser.add_argument("--cache-dir", type=Path, default=None, help="CONVVIZ_CACHE_DIR for the server")
    arguments = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="convviz-bench-") as work:
        work = Path(work)
        photos = write_photos(work, arguments.warm_up + arguments.uploads)
        server_temporary = work / "server-tmp"
        server_temporary.mkdir()
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        log_path = work / "streamlit.log"
        with open(log_path, "wb") as log:
            server = start_server(port, log, server_temporary, arguments.cache_dir)
            try:
                wait_until_healthy(base_url, server, log_path)
                started = time.monotonic()
                with playwright_api.sync_playwright() as playwright, chromium_page(playwright) as page:
                    page.goto(base_url, timeout=FIRST_RUN_SECONDS * 1000)
                    wait_for_app_idle(page, FIRST_RUN_SECONDS)
                    visitor = Visitor(page)
                    for index, photo in enumerate(photos[: arguments.warm_up]):
                        visitor.show(VIEWS[index % len(VIEWS)], photo, FIRST_RUN_SECONDS)
                    time.sleep(2)
                    baseline = resident_bytes(server.pid)
                    held_before = streamlit_accounting(base_url)
                    files_before = files_under(server_temporary)
                    print(f"warm-up: {arguments.warm_up} photos in {time.monotonic() - started:.0f} s; "
                          f"server RSS {baseline / 2**20:.0f} MiB")

                    started, samples = time.monotonic(), []
                    for index, photo in enumerate(photos[arguments.warm_up:]):
                        visitor.show(VIEWS[index % len(VIEWS)], photo)
                        samples.append(resident_bytes(server.pid))
                        if (index + 1) % 10 == 0:
                            print(f"    after {index + 1:3d} photos: RSS {samples[-1] / 2**20:6.0f} MiB "
                                  f"({(samples[-1] - baseline) / baseline:+.1%}), {time.monotonic() - started:.0f} s")
                    seconds_per_photo = (time.monotonic() - started) / max(1, arguments.uploads)
                    time.sleep(2)
                    final = resident_bytes(server.pid)
                    held_after = streamlit_accounting(base_url)
                left_behind = {
                    name: size for name, size in files_under(server_temporary).items() if name not in files_before
                }
            finally:
                server.terminate()
                try:
                    server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait(timeout=30)

    growth = (final - baseline) / baseline
    verdict = "meets" if growth <= GOAL_GROWTH else "MISSES"
    print(f"{arguments.uploads} photos after the warm-up, round Activations, Grad-CAM and Filters "
          f"({seconds_per_photo:.1f} s each):")
    print(f"    server RSS {baseline / 2**20:.0f} MiB -> {final / 2**20:.0f} MiB (peak {max(samples) / 2**20:.0f} MiB): "
          f"{growth:+.1%}  ({verdict} the goal of at most +{GOAL_GROWTH:.0%})")
    half = len(samples) // 2
    if half:
        print(f"    growth over the first half {(samples[half - 1] - baseline) / baseline:+.1%}, "
              f"over the second half {(samples[-1] - samples[half - 1]) / baseline:+.1%}")
    print("    what Streamlit's caches, media files and uploads hold (/_stcore/metrics), MiB:")
    print(f"        {'after warm-up':>14s} {'at the end':>11s}  cache")
    for key in sorted(held_after.keys() | held_before.keys(), key=lambda key: -held_after[key]):
        if max(held_before[key], held_after[key]) >= 2**19:
            print(f"        {held_before[key] / 2**20:14.1f} {held_after[key] / 2**20:11.1f}  {key[0]}: {key[1]}")
    print(f"        {sum(held_before.values()) / 2**20:14.1f} {sum(held_after.values()) / 2**20:11.1f}  in all")
    print(f"    files the server left in its temporary folder: {len(left_behind)}"
          + (f" ({sum(left_behind.values()) / 2**20:.1f} MiB: {sorted(left_behind)[:5]})" if left_behind else ""))
    return 0 if growth <= GOAL_GROWTH and not left_behind else 1


if __name__ == "__main__":
    sys.exit(main())
