"""Measures whether a ConvViz server's memory stays bounded while a visitor uploads photo after photo.

    python bench/bench_memory.py [--warm-up 100] [--uploads 100] [--window 10] [--cache-dir DIR]

Starts `streamlit run app.py` on a free localhost port (with a temporary
folder of its own) and drives it with Debian's chromium through Playwright,
as one visitor on the default model (EfficientNet-Lite0): every upload is a
different generated photo (640x480), and the uploads go round the three views
(Activations, Grad-CAM, Filters), so each view computes for each photo.

The server's resident memory (RSS, from psutil or /proc/<pid>/status) is read
after every photo. The warm-up loads the model, traces every graph and fills
the app's caches, which are bounded by their number of entries: after about
100 photos of this round what they hold stops growing (about 115 MB here, by
Streamlit's own account). The baseline is the median RSS of the last
`--window` photos of the warm-up, the end the median of the last `--window`
photos, and the goal is at most 10% growth. A median, because RSS swings by about 100 MB from one photo to the
next: memory a view has just used, not yet handed back to the system. The
growth from the first photos, while the caches fill, is printed too, with
what Streamlit itself says its caches hold (`/_stcore/metrics`).

The script also checks that no upload piles up on disk: at the end it uploads
`--models` small model files, which the server writes to its temporary folder
while a child process checks them (image uploads stay in memory), and lists
what the server left in that folder. (TensorFlow's autograph also writes its
generated code there, once per process: that is not an upload.)

The Filters view opens on the default atlas. For a built-in model it comes
from the disk cache (`$CONVVIZ_CACHE_DIR/atlases`), or is computed once during
the warm-up (a few minutes on two cores); `--cache-dir` points elsewhere.
"""

import argparse
import collections
import os
import re
import statistics
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
    start_streamlit,
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
    env = {"TMPDIR": str(temporary_folder)}
    if cache_dir is not None:
        env["CONVVIZ_CACHE_DIR"] = str(cache_dir)
    return start_streamlit(port, log, env)


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
        problems = page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]')
        for text in (f"Image: {photo.name}", ready_text):
            # An error ends the wait at once.
            page.get_by_text(text).first.or_(problems.first).wait_for(timeout=timeout_seconds * 1000)
        wait_for_app_idle(page, timeout_seconds)
        if problems.count():
            raise RuntimeError(f"{title} with {photo.name} shows an error: {problems.first.inner_text()}")

    def upload_model(self, path, timeout_seconds=RUN_SECONDS):
        """Chooses "your own model" (once) and uploads a model file, which the server checks and loads."""
        page = self.page
        sidebar = page.locator('[data-testid="stSidebar"]')
        uploader = sidebar.locator('[data-testid="stFileUploader"]').filter(has_text="Model file")
        if not uploader.count():
            sidebar.locator('[data-testid="stSelectbox"]').first.click()
            page.get_by_role("option", name="Your own model (.keras / .h5)").click()
            uploader.wait_for(timeout=timeout_seconds * 1000)
        uploader.locator('input[type="file"]').set_input_files(str(path))
        problems = page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]')
        page.get_by_text(f"Model: {path.name}").first.or_(problems.first).wait_for(timeout=timeout_seconds * 1000)
        wait_for_app_idle(page, timeout_seconds)
        if problems.count():
            raise RuntimeError(f"The model {path.name} shows an error: {problems.first.inner_text()}")


def write_models(folder, count):
    """Writes `count` small `.keras` classifiers with different weights (each upload is checked anew)."""
    import keras

    paths = []
    for index in range(count):
        inputs = keras.Input((32, 32, 3))
        features = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
        pooled = keras.layers.GlobalAveragePooling2D()(features)
        model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(pooled))
        rng = np.random.default_rng(index)
        model.set_weights([rng.normal(0, 0.3, weight.shape).astype(np.float32) for weight in model.get_weights()])
        path = Path(folder) / f"bench-model-{index}.keras"
        model.save(path)
        paths.append(path)
    return paths


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=100, help="photos uploaded after the warm-up")
    parser.add_argument("--warm-up", type=int, default=100, help="photos uploaded before the baseline")
    parser.add_argument("--window", type=int, default=10, help="photos whose median RSS is a reading")
    parser.add_argument("--models", type=int, default=3, help="model files uploaded at the end (temporary files)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="CONVVIZ_CACHE_DIR for the server")
    arguments = parser.parse_args()
    if min(arguments.uploads, arguments.warm_up) < arguments.window:
        parser.error("--uploads and --warm-up must be at least --window")

    total = arguments.warm_up + arguments.uploads
    samples = []
    with tempfile.TemporaryDirectory(prefix="convviz-bench-") as work:
        work = Path(work)
        photos = write_photos(work, total)
        models = write_models(work, arguments.models)
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
                    print(f"server RSS on the cat, before any upload: {resident_bytes(server.pid) / 2**20:.0f} MiB")
                    for index, photo in enumerate(photos):
                        warm = index < arguments.warm_up
                        visitor.show(VIEWS[index % len(VIEWS)], photo, FIRST_RUN_SECONDS if warm else RUN_SECONDS)
                        samples.append(resident_bytes(server.pid))
                        if index + 1 == arguments.warm_up:
                            held_warm = streamlit_accounting(base_url)
                            files_warm = files_under(server_temporary)
                            measured_from = time.monotonic()
                        if (index + 1) % 10 == 0 or index + 1 == arguments.warm_up:
                            phase = "warm-up" if warm else "measured"
                            print(f"    {phase:8s} photo {index + 1:3d}: RSS {samples[-1] / 2**20:6.0f} MiB, "
                                  f"{time.monotonic() - started:4.0f} s", flush=True)
                    seconds_per_photo = (time.monotonic() - measured_from) / arguments.uploads
                    held_end = streamlit_accounting(base_url)
                    # Model files are written to the server's temporary folder
                    # while they are checked; each must be gone afterwards.
                    for path in models:
                        visitor.upload_model(path)
                new_files = {
                    name: size for name, size in files_under(server_temporary).items() if name not in files_warm
                }
            finally:
                server.terminate()
                try:
                    server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait(timeout=30)

    # RSS swings by about 100 MB from one photo to the next (the memory a
    # view has just used and not yet handed back), so a reading is a median.
    window = arguments.window
    baseline = statistics.median(samples[arguments.warm_up - window : arguments.warm_up])
    final = statistics.median(samples[-window:])
    growth = (final - baseline) / baseline
    verdict = "meets" if growth <= GOAL_GROWTH else "MISSES"
    print(f"{arguments.uploads} photos after a warm-up of {arguments.warm_up}, round Activations, Grad-CAM "
          f"and Filters ({seconds_per_photo:.1f} s each), median RSS of {window} photos:")
    print(f"    server RSS {baseline / 2**20:.0f} MiB -> {final / 2**20:.0f} MiB: {growth:+.1%}  "
          f"({verdict} the goal of at most +{GOAL_GROWTH:.0%}); single photos from "
          f"{min(samples[arguments.warm_up:]) / 2**20:.0f} to {max(samples[arguments.warm_up:]) / 2**20:.0f} MiB")
    first = statistics.median(samples[:window])
    print(f"    (from the first {window} photos, while the caches fill: {first / 2**20:.0f} MiB -> "
          f"{final / 2**20:.0f} MiB, {(final - first) / first:+.1%})")
    print("    what Streamlit's caches, media files and uploads hold (/_stcore/metrics), MiB:")
    print(f"        {'after warm-up':>14s} {'at the end':>11s}  cache")
    for key in sorted(held_end.keys() | held_warm.keys(), key=lambda key: -held_end[key]):
        if max(held_warm[key], held_end[key]) >= 2**19:
            print(f"        {held_warm[key] / 2**20:14.1f} {held_end[key] / 2**20:11.1f}  {key[0]}: {key[1]}")
    print(f"        {sum(held_warm.values()) / 2**20:14.1f} {sum(held_end.values()) / 2**20:11.1f}  in all")
    # ConvViz writes uploads only into folders of its own (convviz-upload-*,
    # and convviz-check-* for the child process that checks a model file).
    uploads_left = sorted(name for name in new_files if name.startswith("convviz-"))
    others = sorted(name for name in new_files if not name.startswith("convviz-"))
    print(f"    upload files the server left in its temporary folder after {arguments.uploads} photos and "
          f"{arguments.models} model files: {len(uploads_left)}" + (f" {uploads_left[:5]}" if uploads_left else ""))
    if others:
        print(f"    other new files there: {len(others)}, {sum(new_files[name] for name in others) / 2**10:.0f} KiB "
              f"(e.g. {others[0]})")
    return 0 if growth <= GOAL_GROWTH and not uploads_left else 1


if __name__ == "__main__":
    sys.exit(main())
