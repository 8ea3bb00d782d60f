"""A class of students on one ConvViz server: `streamlit run app.py`, driven through Streamlit's own protocol.

    python bench/bench_classroom.py                       # 30 students arriving within 60 s
    python bench/bench_classroom.py --students 5 --arrival-seconds 10   # a smoke run
    python bench/bench_classroom.py --client browser --students 5       # the same class in real browsers
    python bench/bench_classroom.py --per-session-cpu 5 [--proxy]       # CPU of one new visitor

Two clients play the students. By default (`--client protocol`) each student
is one asyncio task of this process with a `bench/streamlit_client.py`
client: it speaks Streamlit's websocket protocol as the frontend does (script
runs with widget states, page changes, the upload handshake, the pictures
fetched from /media), but draws nothing. The browsers of `--client browser`
need CPU of their own: a run of 30 chromium contexts on the server's 2 cores
measured chromium more than the server (p95 time to a first picture of about
100 s), even at a lower priority. The protocol client costs little (its CPU
time is reported: a small fraction of a second per student), so the times
are the server's. Its price: the protocol is Streamlit's private API (the
protobuf messages, the page routing, the upload handshake), read from the
release that the lock `requirements.txt` pins; an upgrade of streamlit may
need `streamlit_client.py` adapted. It also never loads Streamlit's frontend
files (index.html and its scripts, which a new visitor costs the server too:
see `--per-session-cpu`) and runs no JavaScript. The browser client remains
for that: it exercises exactly what a class does, frontend files included,
at a lower priority (`--browser-nice`, 10 by default: the server wins every
contention); its full run belongs on a quiet machine, ideally with the
browsers on another one (`--url` of a server started elsewhere; then RSS and
CPU are not measured).

The server is warmed up first, as a teacher would by opening the app before
the class (the app's readiness check: the model loaded, the default page
computed for the sample photo; `--cold` skips it); the filter atlases start
cold (a new, empty CONVVIZ_CACHE_DIR unless `--cache-dir`). Every student
uploads a photo of its own (a sample photo, cropped, flipped and
tinted differently, with a coloured grid of its own), waits for the
Activations grid of that photo, opens Grad-CAM, then Filters; half of the
students keep the default layer, the other half then pick another layer and
compute its patterns. Reported: p50/p95 time to the first picture of each
page (from the click to the picture drawn -- with the protocol client:
received in the current script run and its file fetched -- not stale), the
Filters queue as the page shows it (waiting messages, cancellations,
queue-full offers), errors (exceptions, error boxes, timeouts: must be 0), the
server's peak RSS and CPU time, the client's CPU time, and that every student
was shown its own photo (the Grad-CAM page's "Your image" and the sidebar's
preview, decoded and compared with all the uploads). Only loopback traffic:
the browsers' other requests are refused, and the protocol client talks only
to the server.

`--per-session-cpu N` measures instead what one new visitor costs the server
on a warm, cached view: the server's CPU time (from /proc) over N fresh
browser contexts (always browsers: the frontend files are part of the cost)
opening /grad_cam one after another, split into what Streamlit's frontend
files cost and the rest; `--proxy` puts nginx with tools/nginx/convviz.conf
in front (frontend files served by nginx).
"""

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np

# Beside this file (a script's folder is on sys.path).
from streamlit_client import MAIN, SIDEBAR, StreamlitClient, element_text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1280, "height": 900}
SAMPLES = ["chelsea", "coffee", "rocket", "astronaut", "camera"]
PAGES = ["open", "activations", "grad_cam", "filters", "filters_own_layer"]
QUEUE_WORDS = re.compile(r"wait|ahead|queue|line", re.IGNORECASE)
CANCEL_WORDS = re.compile(r"cancel|stopped|replaced|time limit|timed out", re.IGNORECASE)

# Is a picture with this caption drawn in the main area, loaded and not stale,
# on a run for this image (the page's caption names it)?
PICTURE_SHOWN = """
([imageName, captionPrefix, captionPart]) => {
    const main = document.querySelector('[data-testid="stMain"]');
    if (!main) return false;
    if (imageName && !main.innerText.includes("Image: " + imageName)) return false;
    for (const figure of main.querySelectorAll('[data-testid="stImage"]')) {
        const caption = figure.querySelector('[data-testid="stImageCaption"]');
        const img = figure.querySelector("img");
        const container = figure.closest('[data-testid="stElementContainer"]');
        if (!caption || !img) continue;
        const text = caption.innerText;
        if (!text.startsWith(captionPrefix) || (captionPart && !text.includes(captionPart))) continue;
        if (container && container.getAttribute("data-stale") === "true") continue;
        if (img.complete && img.naturalWidth > 0) return true;
    }
    return false;
}
"""
PICTURE_SOURCE = """
([area, captionPrefix]) => {
    const root = document.querySelector(`[data-testid="${area}"]`);
    if (!root) return null;
    for (const figure of root.querySelectorAll('[data-testid="stImage"]')) {
        const caption = figure.querySelector('[data-testid="stImageCaption"]');
        if (caption && caption.innerText.startsWith(captionPrefix)) return figure.querySelector("img").src;
    }
    return null;
}
"""
# What the page says while the Filters page waits: progress bars and boxes.
PAGE_MESSAGES = """
() => Array.from(document.querySelectorAll(
    '[data-testid="stMain"] [data-testid="stProgress"], [data-testid="stMain"] [data-testid="stAlert"], '
    + '[data-testid="stMain"] [data-testid="stCaption"], [data-testid="stMain"] [data-testid="stSpinner"]'
)).map(element => element.innerText.trim()).filter(text => text)
"""
PAGE_ERRORS = """
() => {
    const errors = [];
    for (const element of document.querySelectorAll('[data-testid="stException"]')) errors.push("exception: " + element.innerText.slice(0, 300));
    for (const element of document.querySelectorAll('[data-testid="stAlertContentError"]')) errors.push("error box: " + element.innerText.slice(0, 300));
    return errors;
}
"""


# ----------------------------------------------------------------------------- server


def free_port():
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def process_cpu_seconds(pid):
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_rss_mb(pid):
    """Resident memory of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextlib.contextmanager
def streamlit_server(log_path, cache_dir, port=None, extra_arguments=()):
    """`streamlit run app.py` on 127.0.0.1 with the repository's settings, until the block ends.

    Yields:
        (base URL, `subprocess.Popen`).
    """
    port = port or free_port()
    command = [
        sys.executable, "-m", "streamlit", "run", "app.py",
        f"--server.port={port}", "--server.address=127.0.0.1", "--server.headless=true",
        *extra_arguments,
    ]
    environment = {**os.environ, "CONVVIZ_CACHE_DIR": str(cache_dir), "PYTHONUNBUFFERED": "1"}
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if server.poll() is not None:
                raise RuntimeError("the server stopped:\n" + Path(log_path).read_text(errors="replace"))
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(base_url + "/_stcore/health", timeout=2) as response:
                    if response.read() == b"ok":
                        break
            if time.monotonic() > deadline:
                raise TimeoutError("no health after 180 s:\n" + Path(log_path).read_text(errors="replace"))
            time.sleep(0.3)
        yield base_url, server
    finally:
        stop_process_group(server)


def stop_process_group(process):
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def nginx_proxy(streamlit_port, folder):
    """nginx with tools/nginx/convviz.conf in front of Streamlit (as tests/test_reverse_proxy.py runs it).

    Yields:
        The proxy's base URL.
    """
    sys.path.insert(0, str(ROOT / "tests"))
    import test_reverse_proxy

    nginx = test_reverse_proxy.NGINX
    if nginx is None:
        raise SystemExit("--proxy needs nginx (apt-get install nginx-light)")
    port = free_port()
    config = test_reverse_proxy._nginx_config(Path(folder), port, streamlit_port)
    command = [nginx, "-p", str(folder), "-c", str(config), "-g", "daemon off;" + (" user root;" if os.geteuid() == 0 else "")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base_url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            with contextlib.suppress(OSError):
                urllib.request.urlopen(base_url + "/_stcore/health", timeout=2).read()
                break
            time.sleep(0.1)
        yield base_url
    finally:
        stop_process_group(process)


class ServerMonitor:
    """Samples the server's RSS and CPU time every half second, in a thread."""

    def __init__(self, pid):
        self.pid = pid
        self.peak_rss_mb = 0.0
        self.start_rss_mb = process_rss_mb(pid)
        self.start_cpu = process_cpu_seconds(pid)
        self.cpu_seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.5):
            with contextlib.suppress(OSError):
                self.peak_rss_mb = max(self.peak_rss_mb, process_rss_mb(self.pid))
                self.cpu_seconds = process_cpu_seconds(self.pid) - self.start_cpu

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join()
        self._run_once()

    def _run_once(self):
        with contextlib.suppress(OSError):
            self.peak_rss_mb = max(self.peak_rss_mb, process_rss_mb(self.pid))
            self.cpu_seconds = process_cpu_seconds(self.pid) - self.start_cpu


# ----------------------------------------------------------------------------- students


def student_photo(index, seed):
    """A photo of a student's own: a sample photo cropped, flipped and tinted, with a coloured grid of its own.

    Returns:
        RGB uint8 array.
    """
    from convviz_core.inputs.samples import sample_image

    generator = np.random.default_rng([seed, index])
    image = np.array(sample_image(SAMPLES[index % len(SAMPLES)]))
    height, width = image.shape[:2]
    top, left = generator.integers(0, height // 5), generator.integers(0, width // 5)
    image = image[top:top + height * 4 // 5, left:left + width * 4 // 5]
    if generator.random() < 0.5:
        image = image[:, ::-1]
    tint = generator.uniform(0.6, 1.4, size=3)
    grid = generator.integers(0, 256, size=(4, 4, 3)).astype(np.float32)
    grid = cv2.resize(grid, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
    mixed = 0.6 * np.clip(image * tint, 0, 255) + 0.4 * grid
    return np.ascontiguousarray(mixed.astype(np.uint8))


def small(image):
    """A 32×32 float thumbnail, to tell photos apart."""
    return cv2.resize(image, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)


def write_jpeg(path, image):
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    Path(path).write_bytes(encoded.tobytes())


class Student:
    """One simulated student: what it did, how long it waited, what went wrong."""

    def __init__(self, index, photo_path, photo, own_layer_steps):
        self.index = index
        self.name = Path(photo_path).name
        self.photo_path = photo_path
        self.photo = photo
        self.own_layer_steps = own_layer_steps  # 0: keeps the default layer
        self.times = {}
        self.errors = []
        self.messages = set()
        self.queue_full_offers = 0
        self.shown = {}
        self.own_layer = None
        # With a fault injected (--fault): what made the student reload, once.
        self.reloaded = []


async def only_loopback(route):
    host = re.match(r"^[a-z]+://([^/:]+)", route.request.url)
    if host and host.group(1) in ("127.0.0.1", "localhost"):
        await route.continue_()
    else:
        await route.abort()


def record_message(student, message):
    """Keeps what the Filters page said about its queue (waiting, cancelled), in the shape it said it."""
    if message and (QUEUE_WORDS.search(message) or CANCEL_WORDS.search(message)):
        # Numbers (seconds, positions) vary: keep the message's shape.
        student.messages.add(re.sub(r"\d+(\.\d+)?", "N", message.splitlines()[0])[:160])


def decode_rgb(data):
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class BrowserStudent:
    """What a student does, in a context of one chromium (its own cookies, cache and websocket)."""

    AREAS = {"main": "stMain", "sidebar": "stSidebar"}

    def __init__(self, browser, base_url, student, timeouts):
        self.browser, self.base_url, self.student, self.timeouts = browser, base_url, student, timeouts
        self.context = self.page = None

    async def open(self):
        self.context = await self.browser.new_context(viewport=VIEWPORT)
        # Under load a click or an upload may wait for the page: as long as a page may take.
        self.context.set_default_timeout(self.timeouts["page"] * 1000)
        await self.context.route("**/*", only_loopback)
        self.page = await self.context.new_page()
        await self.page.goto(self.base_url, timeout=self.timeouts["page"] * 1000)
        await self.page.locator('[data-testid="stMain"] [data-testid="stImage"] img').first.wait_for(
            timeout=self.timeouts["page"] * 1000
        )

    async def upload_photo(self):
        uploader = self.page.locator('[data-testid="stFileUploader"]').filter(has_text="upload a photo")
        await uploader.locator('input[type="file"]').set_input_files(str(self.student.photo_path))

    async def open_page(self, title):
        await self.page.locator('[data-testid="stSidebarNav"] a').filter(has_text=title).first.click()

    async def wait_for_picture(self, caption_prefix, caption_part, timeout, watch_queue=False):
        """Waits until the picture is drawn; while waiting, records what the page says and answers queue offers."""
        page, student = self.page, self.student
        deadline = time.monotonic() + timeout
        while True:
            if await page.evaluate(PICTURE_SHOWN, [student.name, caption_prefix, caption_part]):
                return
            errors = await page.evaluate(PAGE_ERRORS)
            if errors:
                raise RuntimeError("; ".join(errors))
            if watch_queue:
                for message in await page.evaluate(PAGE_MESSAGES):
                    record_message(student, message)
                offer = page.locator('[data-testid="stMain"] button').filter(has_text=re.compile(r"wait", re.IGNORECASE))
                if await offer.count() and student.queue_full_offers < 3:
                    student.queue_full_offers += 1
                    await offer.first.click()
            if time.monotonic() > deadline:
                raise TimeoutError(f"no picture '{caption_prefix}…{caption_part or ''}' after {timeout} s")
            await asyncio.sleep(0.25)

    async def picture(self, area, caption_prefix):
        """The picture in "main" or "sidebar" whose caption starts with `caption_prefix`, decoded (RGB)."""
        source = await self.page.evaluate(PICTURE_SOURCE, [self.AREAS[area], caption_prefix])
        if source is None:
            raise RuntimeError(f"no picture '{caption_prefix}' in {area}")
        response = await self.context.request.get(source)
        return decode_rgb(await response.body())

    async def choose_another_layer(self, steps):
        """Picks the layer `steps` entries below the current one in the Filters form, computes; returns its name."""
        page = self.page
        form = page.locator('[data-testid="stMain"] [data-testid="stForm"]').first
        field = form.locator('[data-testid="stSelectbox"]').filter(has_text="Layer").first.locator("input")
        default = await field.input_value()
        await field.click()
        for _ in range(steps):
            await page.keyboard.press("ArrowDown")
        await page.keyboard.press("Enter")
        await page.wait_for_timeout(300)
        layer = await field.input_value()
        if layer == default:
            raise RuntimeError(f"could not choose another layer than {default}")
        await form.get_by_role("button").filter(has_text=re.compile("compute", re.IGNORECASE)).first.click()
        return layer

    async def close(self):
        if self.context is not None:
            await self.context.close()


# ----------------------------------------------------------------------------- students, through Streamlit's protocol


def picture_shown(client, image_name, caption_prefix, caption_part):
    """PICTURE_SHOWN for a protocol client: the current run's main area names the image and shows the picture."""
    if image_name and not any(f"Image: {image_name}" in text for text in client.texts(MAIN)):
        return False
    return any(picture.caption.startswith(caption_prefix) and (not caption_part or caption_part in picture.caption)
               for picture in client.pictures(MAIN))


class ProtocolStudent:
    """What a student does, through Streamlit's websocket protocol (`StreamlitClient`): nothing drawn."""

    AREAS = {"main": MAIN, "sidebar": SIDEBAR}

    def __init__(self, base_url, student, timeouts):
        self.client, self.student, self.timeouts = StreamlitClient(base_url), student, timeouts

    async def open(self):
        await self.client.connect(timeout=self.timeouts["page"])
        await self.client.run()
        await self.client.wait_until(lambda: self.client.pictures(MAIN), self.timeouts["page"])

    async def upload_photo(self):
        uploader = self.client.widget("file_uploader", "upload a photo", SIDEBAR)
        await self.client.upload_file(uploader, self.student.photo_path, "image/jpeg", timeout=self.timeouts["page"])

    async def open_page(self, title):
        await self.client.open_page(title)

    async def wait_for_picture(self, caption_prefix, caption_part, timeout, watch_queue=False):
        """Waits for the picture, reading every message the page sends.

        While it waits with `watch_queue`, every progress bar, box and spinner
        the main area receives is recorded (what PAGE_MESSAGES finds in a
        browser, but every message rather than what a poll catches), and a
        button labelled with "wait" is pressed (at most 3 times).
        """
        client, student = self.client, self.student

        def listen(node):
            if node.path[0] == MAIN and node.kind in ("progress", "alert", "spinner"):
                record_message(student, element_text(node.element))

        deadline = time.monotonic() + timeout
        if watch_queue:
            client.element_listeners.append(listen)
        try:
            while True:
                seen = client.version
                if picture_shown(client, student.name, caption_prefix, caption_part):
                    return
                errors = client.errors()
                if errors:
                    raise RuntimeError("; ".join(errors))
                if watch_queue and student.queue_full_offers < 3:
                    offers = [node for node in client.nodes(MAIN, "button")
                              if re.search("wait", node.proto.label, re.IGNORECASE)]
                    if offers:
                        student.queue_full_offers += 1
                        await client.click(offers[0])
                        continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no picture '{caption_prefix}…{caption_part or ''}' after {timeout} s")
                await client.wait_for_change(seen, remaining)
        finally:
            if watch_queue:
                client.element_listeners.remove(listen)

    async def picture(self, area, caption_prefix):
        """The current run's picture in "main" or "sidebar" whose caption starts with `caption_prefix` (RGB).

        Waits for its file as a browser does: on a busy server it may arrive
        after the picture the student waited for.
        """
        def matching():
            return [picture for picture in self.client.pictures(self.AREAS[area])
                    if picture.caption.startswith(caption_prefix)]

        with contextlib.suppress(TimeoutError):
            await self.client.wait_until(matching, min(60.0, self.timeouts["page"]))
        pictures = matching()
        if not pictures:
            raise RuntimeError(f"no picture '{caption_prefix}' in {area}")
        return decode_rgb(await self.client.picture_bytes(pictures[0].url))

    async def choose_another_layer(self, steps):
        """Picks the layer `steps` entries below in the Filters form and presses Compute; returns its name."""
        client = self.client
        forms = client.forms(MAIN)
        if not forms:
            raise RuntimeError("no form on the page")
        field = client.widget("selectbox", "Layer", MAIN, form_id=forms[0])
        options = list(field.proto.options)
        default = client.selected_option(field)
        # As the arrow keys move in the open list: down, and no further than its end.
        layer = options[min(options.index(default) + steps, len(options) - 1)]
        if layer == default:
            raise RuntimeError(f"could not choose another layer than {default}")
        buttons = [node for node in client.nodes(MAIN, "button") if node.proto.is_form_submitter
                   and node.proto.form_id == forms[0] and re.search("compute", node.proto.label, re.IGNORECASE)]
        if not buttons:
            raise RuntimeError("no Compute button in the form")
        await client.submit_form(buttons[0], [client.selectbox_value(field, layer)])
        return layer

    async def close(self):
        await self.client.close()


# ----------------------------------------------------------------------------- what every student does


async def run_student(driver, student, start_delay, timeouts, started, fault=None, make_driver=None):
    """One student's visit, through a `BrowserStudent` or a `ProtocolStudent`: times, pictures, errors.

    With a `fault` (`FaultInjector`) that has struck, a failed visit is not an
    error yet: the student reloads the page (a new session, with its cookies:
    nginx's route) and does the visit again from the start, once.
    """
    await asyncio.sleep(start_delay)
    await visit(driver, student, timeouts, started)
    if fault is not None and student.errors and fault.struck_at is not None and make_driver is not None:
        student.reloaded = student.errors
        student.errors = []
        await asyncio.sleep(fault.reload_delay)
        again = make_driver(student)
        again.client.cookies.update(driver.client.cookies)
        await visit(again, student, timeouts, started)


async def visit(driver, student, timeouts, started):
    """The visit of `run_student`, from opening the app to the student's own layer."""
    step = "open"
    try:
        began = time.monotonic()
        student.arrived = began - started
        await driver.open()
        student.times["open"] = time.monotonic() - began

        step = "activations"
        began = time.monotonic()
        await driver.upload_photo()
        await driver.wait_for_picture("All ", None, timeouts["page"])
        student.times["activations"] = time.monotonic() - began

        step = "grad_cam"
        began = time.monotonic()
        await driver.open_page("Grad-CAM")
        await driver.wait_for_picture("Heatmap × ", None, timeouts["page"])
        student.times["grad_cam"] = time.monotonic() - began
        student.shown["grad_cam"] = await driver.picture("main", "Your image")
        student.shown["preview"] = await driver.picture("sidebar", "What the model sees")

        step = "filters"
        began = time.monotonic()
        await driver.open_page("Filters")
        await driver.wait_for_picture("Filters ", None, timeouts["filters"], watch_queue=True)
        student.times["filters"] = time.monotonic() - began

        if student.own_layer_steps:
            step = "filters_own_layer"
            began = time.monotonic()
            student.own_layer = await driver.choose_another_layer(student.own_layer_steps)
            await driver.wait_for_picture("Filters ", f" of {student.own_layer},", timeouts["filters"],
                                          watch_queue=True)
            student.times["filters_own_layer"] = time.monotonic() - began
    except Exception as error:  # noqa: BLE001 -- every failure is a finding to report
        first_line = str(error).splitlines()[0][:300] if str(error) else ""
        student.errors.append(f"{step}: {type(error).__name__}: {first_line}")
    finally:
        await driver.close()


async def run_students(args, students, arrivals, timeouts, make_driver):
    """Every student's visit at its arrival time; returns the wall-clock seconds until the last is done."""
    started = time.monotonic()
    fault = getattr(args, "fault_injector", None)
    fault_task = asyncio.create_task(fault.run(started)) if fault is not None else None
    try:
        await asyncio.wait_for(
            asyncio.gather(*(run_student(make_driver(student), student, delay, timeouts, started,
                                         getattr(args, "fault_injector", None), make_driver)
                             for student, delay in zip(students, arrivals))),
            timeout=args.arrival_seconds + args.total_timeout,
        )
    finally:
        wall = time.monotonic() - started
        if fault_task is not None:
            if not fault_task.done():
                # The fault's own outcome (a job's end) may come after the students'.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(fault_task), 600)
            if fault_task.done() and not fault_task.cancelled() and fault_task.exception() is not None:
                fault.report["error"] = repr(fault_task.exception())
            fault_task.cancel()
    return wall


def check_own_images(students):
    """Which students were shown a photo that is not the one they uploaded."""
    uploads = [small(student.photo) for student in students]
    wrong = []
    for student in students:
        for where, shown in student.shown.items():
            picture = small(shown)
            distances = sorted((float(np.abs(picture - upload).mean()), index) for index, upload in enumerate(uploads))
            closest = distances[0][1]
            if closest != student.index or (len(distances) > 1 and distances[0][0] > distances[1][0] / 2):
                wrong.append(f"student {student.index} {where}: closest upload is {closest} ({distances[:2]})")
    return wrong


def percentile(values, fraction):
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def prepare_class(args, folder):
    """The students, each with a photo of its own written to `folder`, and when each arrives.

    Returns:
        (list of `Student`, sorted arrival delays in seconds).
    """
    students = []
    generator = random.Random(args.seed)
    for index in range(args.students):
        photo = student_photo(index, args.seed)
        path = folder / f"student-{index:02d}.jpg"
        write_jpeg(path, photo)
        # Read back as the server will (JPEG), to compare like with like.
        photo = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        students.append(Student(index, path, photo, own_layer_steps=generator.randint(1, 6) if index % 2 else 0))
    arrivals = sorted(generator.uniform(0, args.arrival_seconds) for _ in students)
    return students, arrivals


def client_cpu_seconds():
    """CPU time of this process and of its children that ended (the browsers, once closed)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


async def run_class(args, base_url, monitor):
    """Runs the class with the chosen client.

    Returns:
        (students, wall-clock seconds from the first arrival to the last
        student done, the client's CPU seconds over that time).
    """
    folder = Path(tempfile.mkdtemp(prefix="convviz-class-"))
    students, arrivals = prepare_class(args, folder)
    timeouts = {"page": args.page_timeout, "filters": args.filters_timeout}
    if args.client == "browser":
        import playwright.async_api  # noqa: F401 -- before the clock starts: importing is no student's work
    run = run_browsers if args.client == "browser" else run_protocol_clients
    try:
        cpu_before = client_cpu_seconds()
        wall = await run(args, base_url, students, arrivals, timeouts)
        client_cpu = client_cpu_seconds() - cpu_before
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return students, wall, client_cpu


async def run_protocol_clients(args, base_url, students, arrivals, timeouts):
    """Every student an asyncio task with a `StreamlitClient` of its own; returns the wall-clock seconds."""
    return await run_students(args, students, arrivals, timeouts,
                              lambda student: ProtocolStudent(base_url, student, timeouts))


async def run_browsers(args, base_url, students, arrivals, timeouts):
    """Every student a context of one chromium, driven through Playwright; returns the wall-clock seconds."""
    from playwright.async_api import async_playwright

    if args.browser_nice:
        os.nice(args.browser_nice)  # the browsers (children of this process) yield to the server
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            return await run_students(args, students, arrivals, timeouts,
                                      lambda student: BrowserStudent(browser, base_url, student, timeouts))
        finally:
            await browser.close()


def report_class(args, students, wall, monitor, client_cpu=None):
    lines = [f"{len(students)} students ({args.client} client) arriving within {args.arrival_seconds:.0f} s; "
             f"all done after {wall:.1f} s"]
    figures = {}
    for name in PAGES:
        values = [student.times[name] for student in students if name in student.times]
        figures[name] = {"count": len(values), "p50": percentile(values, 0.5), "p95": percentile(values, 0.95),
                         "max": max(values) if values else float("nan")}
        lines.append(f"  time to first picture, {name:<18} n={len(values):>2}  p50 {figures[name]['p50']:6.1f} s"
                     f"  p95 {figures[name]['p95']:6.1f} s  max {figures[name]['max']:6.1f} s")
    errors = [f"student {student.index}: {error}" for student in students for error in student.errors]
    wrong = check_own_images(students)
    messages = {}
    for student in students:
        for message in student.messages:
            messages[message] = messages.get(message, 0) + 1
    waited = sum(1 for student in students if any(QUEUE_WORDS.search(m) for m in student.messages))
    cancelled = sum(1 for student in students if any(CANCEL_WORDS.search(m) for m in student.messages))
    offers = sum(student.queue_full_offers for student in students)
    lines.append(f"  Filters queue: {waited} students saw a waiting message, {cancelled} a cancellation, "
                 f"{offers} queue-full offers answered")
    for message, count in sorted(messages.items(), key=lambda item: -item[1])[:12]:
        lines.append(f"    {count:>2}x {message}")
    if monitor is not None:
        lines.append(f"  server: peak RSS {monitor.peak_rss_mb:.0f} MB (at start {monitor.start_rss_mb:.0f} MB), "
                     f"CPU {monitor.cpu_seconds:.1f} s over {wall:.0f} s")
    if client_cpu is not None:
        whose = "this process and the browsers" if args.client == "browser" else "this process"
        lines.append(f"  client: CPU {client_cpu:.1f} s ({whose}), {client_cpu / len(students):.2f} s per student")
    lines.append(f"  own photo shown to every student: {'yes' if not wrong else 'NO'} "
                 f"({sum(len(student.shown) for student in students)} pictures checked)")
    lines.extend(f"    {line}" for line in wrong)
    lines.append(f"  errors: {len(errors)}")
    lines.extend(f"    {line}" for line in errors)
    result = {
        "students": len(students), "arrival_seconds": args.arrival_seconds, "wall_seconds": wall,
        "time_to_first_picture": figures, "errors": errors, "wrong_images": wrong,
        "queue": {"waited": waited, "cancelled": cancelled, "queue_full_offers": offers, "messages": messages},
        "server_peak_rss_mb": monitor.peak_rss_mb if monitor else None,
        "server_cpu_seconds": monitor.cpu_seconds if monitor else None,
        "client": args.client, "client_cpu_seconds": client_cpu,
    }
    return "\n".join(lines), result


# ----------------------------------------------------------------------------- one new visitor


def measure_per_session_cpu(args, base_url, server):
    """Server CPU time of each of N new browsers opening a cached Grad-CAM page, one at a time."""
    from playwright.sync_api import sync_playwright

    results = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            for visit in range(args.per_session_cpu + 1):
                context = browser.new_context(viewport=VIEWPORT)
                context.route("**/*", lambda route: route.continue_()
                              if re.match(r"^[a-z]+://(127\.0\.0\.1|localhost)[:/]", route.request.url)
                              else route.abort())
                page = context.new_page()
                requests = {"static": 0, "other": 0}
                page.on("requestfinished", lambda request: requests.__setitem__(
                    "static" if "/static/" in request.url else "other",
                    requests["static" if "/static/" in request.url else "other"] + 1))
                before = process_cpu_seconds(server.pid)
                began = time.monotonic()
                page.goto(f"{base_url}/grad_cam", timeout=args.page_timeout * 1000)
                page.get_by_text("Heatmap × ").first.wait_for(timeout=args.page_timeout * 1000)
                shown = time.monotonic() - began
                page.wait_for_function(
                    """() => document.querySelector('[data-testid="stApp"]')
                           .getAttribute('data-test-script-state') === 'notRunning'""",
                    timeout=args.page_timeout * 1000,
                )
                page.wait_for_timeout(1500)
                cpu = process_cpu_seconds(server.pid) - before
                context.close()
                label = "warm-up" if visit == 0 else f"visit {visit}"
                print(f"  {label}: server CPU {cpu:.2f} s, Grad-CAM shown after {shown:.1f} s, "
                      f"requests: {requests['static']} frontend files, {requests['other']} other", flush=True)
                if visit:
                    results.append(cpu)
        finally:
            browser.close()
    median = statistics.median(results)
    print(f"new visitor on a cached Grad-CAM page: median server CPU {median:.2f} s "
          f"(min {min(results):.2f}, max {max(results):.2f}, n={len(results)})")
    return {"per_session_cpu_seconds": results, "median": median}


# ----------------------------------------------------------------------------- main


# ----------------------------------------------------------------------------- the course topology (--topology)


class FaultInjector:
    """Strikes once while the class runs (`--fault`), and reports what became of it.

    - "worker": as soon as a worker runs a student's atlas, it is killed (SIGKILL) and
      a new worker is started (what Compose's restart policy does); the job
      must end on the new worker, or fail with a message, within its time limit.
    - "replica": `--fault-at` seconds into the class, the last replica is killed
      (SIGKILL); its students reload (nginx sends them to another replica).
    - "redis": `--fault-at` seconds into the class, Redis is restarted, empty.

    A student whose visit failed after the fault struck reloads once
    (`run_student`); what made them reload is reported, not counted as an error.
    """

    def __init__(self, kind, started, at_seconds):
        self.kind = kind
        self.topology = started
        self.at_seconds = at_seconds
        self.struck_at = None
        # A student waits this long before reloading (as a person would).
        self.reload_delay = 3.0
        self.report = {"fault": kind}

    async def run(self, class_started):
        from convviz_core import job_queue
        from tools import topology

        connection = job_queue.connect(self.topology.queue_url)
        if self.kind == "worker":
            job_id, record = await asyncio.to_thread(self._running_job, connection)
            name = record[b"worker"].decode()
            victim = next(worker for worker in self.topology.workers if worker.name == name)
            victim.kill(signal.SIGKILL)
            self.struck_at = time.monotonic()
            self.report.update(at_seconds=self.struck_at - class_started, killed=name,
                               job=record.get(b"description", b"").decode())
            await asyncio.to_thread(self.topology.add_worker)
            done = await asyncio.to_thread(self._wait_done, connection, job_id)
            self.report.update(
                seconds_to_outcome=time.monotonic() - self.struck_at,
                outcome=done.get(b"outcome", b"?").decode(),
                attempts=int(done.get(b"attempt", b"1")),
                finished_by=done.get(b"worker", b"?").decode(),
            )
            return
        await asyncio.sleep(max(0.0, self.at_seconds - (time.monotonic() - class_started)))
        self.struck_at = time.monotonic()
        self.report["at_seconds"] = self.struck_at - class_started
        if self.kind == "replica":
            process, port = self.topology.replicas[-1]
            process.kill(signal.SIGKILL)
            self.report["killed"] = f"{process.name} (127.0.0.1:{port})"
        elif self.kind == "redis":
            began = time.monotonic()
            await asyncio.to_thread(topology.restart_redis, self.topology.redis, self.topology.queue_url)
            self.report["redis_down_seconds"] = time.monotonic() - began

    @staticmethod
    def _running_job(connection):
        from convviz_core import job_queue

        while True:
            for key in connection.keys(job_queue.job_key("*")):
                record = connection.hgetall(key)
                # A student's atlas (not a warm-up nobody waits for yet).
                if record.get(b"state") == b"running" and record.get(b"worker") and record.get(b"priority") != b"2":
                    return key.decode().rsplit(":", 1)[1], record
            time.sleep(0.1)

    @staticmethod
    def _wait_done(connection, job_id, most_seconds=1800):
        from convviz_core import job_queue

        deadline = time.monotonic() + most_seconds
        while time.monotonic() < deadline:
            record = connection.hgetall(job_queue.job_key(job_id))
            if record.get(b"state") == b"done":
                return record
            time.sleep(0.2)
        return {}


class TopologyMonitor:
    """A `ServerMonitor` for every replica and worker of a topology (those started before the class)."""

    def __init__(self, started):
        self.started = started
        self.monitors = {process.name: ServerMonitor(process.pid)
                         for process in [*(p for p, _ in started.replicas), *started.workers]}

    def __enter__(self):
        for monitor in self.monitors.values():
            monitor.__enter__()
        return self

    def __exit__(self, *exc_info):
        for monitor in self.monitors.values():
            monitor.__exit__(*exc_info)

    def figures(self):
        """{process name: {start/peak RSS, CPU}} and the queue's jobs (from Redis)."""
        from convviz_core import job_queue

        processes = {name: {"start_rss_mb": monitor.start_rss_mb, "peak_rss_mb": monitor.peak_rss_mb,
                            "cpu_seconds": monitor.cpu_seconds} for name, monitor in self.monitors.items()}
        jobs = []
        with contextlib.suppress(Exception):
            connection = job_queue.connect(self.started.queue_url)
            for key in connection.keys(job_queue.job_key("*")):
                record = connection.hgetall(key)
                started, finished = record.get(b"started_at"), record.get(b"finished_at")
                error = ""
                if record.get(b"outcome") == b"error":
                    found = job_queue._error_from(record, record.get(b"description", b"a job").decode())
                    error = f"{type(found).__name__}: {found}"
                jobs.append({
                    "description": record.get(b"description", b"").decode(),
                    "outcome": record.get(b"outcome", b"").decode(),
                    "state": record.get(b"state", b"").decode(),
                    "priority": record.get(b"priority", b"").decode(),
                    "error": error,
                    "worker": record.get(b"worker", b"").decode(),
                    "seconds": float(finished) - float(started) if started and finished else None,
                })
        return {"processes": processes, "jobs": jobs}


def report_topology(figures, fault, students):
    lines = []
    for name, process in figures["processes"].items():
        lines.append(f"  {name}: RSS {process['start_rss_mb']:.0f} MB at start, peak {process['peak_rss_mb']:.0f} MB;"
                     f" CPU {process['cpu_seconds']:.1f} s")
    jobs = figures["jobs"]
    ran = [job for job in jobs if job["seconds"] is not None]
    outcomes = {}
    for job in jobs:
        outcomes[job["outcome"] or "unfinished"] = outcomes.get(job["outcome"] or "unfinished", 0) + 1
    lines.append(f"  queue: {len(jobs)} jobs {outcomes}; run time p50 "
                 f"{percentile([job['seconds'] for job in ran], 0.5):.1f} s, max "
                 f"{max([job['seconds'] for job in ran], default=float('nan')):.1f} s")
    for job in jobs:
        if job["outcome"] != "ok":
            # Not every job has a waiting student: a warm-up still running, a request given up.
            lines.append(f"    {job['outcome'] or 'unfinished'} ({job['state'] or '?'}, priority "
                         f"{job['priority'] or '?'}): {job['description']}{': ' + job['error'] if job['error'] else ''}")
    if fault is not None:
        lines.append(f"  fault: {fault.report}")
        reasons = {}
        for student in students:
            for reason in student.reloaded:
                reasons[reason] = reasons.get(reason, 0) + 1
        lines.append(f"  students who reloaded after the fault: {sum(1 for s in students if s.reloaded)}")
        for reason, count in sorted(reasons.items(), key=lambda item: -item[1])[:8]:
            lines.append(f"    {count:>2}x {reason}")
    load = os.getloadavg()
    lines.append(f"  machine load average at the end (1, 5, 15 min): {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
                 f" on {os.cpu_count()} CPUs")
    return "\n".join(lines)


def run_topology_class(args, folder):
    """The class against tools/topology.py's Redis, workers, replicas and nginx; returns (text, result)."""
    from convviz_app.readiness import check_readiness
    from tools import topology

    with topology.topology(folder, replicas=args.replicas, workers=args.workers) as started:
        print(f"topology: nginx {started.url}, {args.replicas} replicas, {args.workers} workers, "
              f"logs in {folder}", flush=True)
        if not args.cold:
            for process, port in started.replicas:
                began = time.monotonic()
                ready, reason = check_readiness(f"http://127.0.0.1:{port}", timeout=args.page_timeout)
                print(f"warm-up of {process.name}: {reason}, {time.monotonic() - began:.1f} s", flush=True)
        fault = None
        if args.fault:
            at = args.fault_at if args.fault_at is not None else args.arrival_seconds / 2
            fault = FaultInjector(args.fault, started, at)
        args.fault_injector = fault
        with TopologyMonitor(started) as monitor:
            students, wall, client_cpu = asyncio.run(run_class(args, started.url, None))
        text, result = report_class(args, students, wall, None, client_cpu)
        figures = monitor.figures()
        text += "\n" + report_topology(figures, fault, students)
        result["topology"] = figures
        result["fault"] = fault.report if fault else None
        result["reloaded"] = [student.reloaded for student in students if student.reloaded]
        result["load_average"] = os.getloadavg()
        if any(student.errors for student in students):
            nginx_errors = (folder / "error.log").read_text(errors="replace").splitlines() \
                if (folder / "error.log").exists() else []
            text += "\n  nginx error log (last 10):\n    " + "\n    ".join(nginx_errors[-10:])
            for process in started.processes():
                problems = [line for line in process.log().splitlines()
                            if re.search(r"Error|Exception|Traceback", line) and "cuInit" not in line]
                if problems:
                    text += f"\n  {process.name} log, its errors (last 10):\n    " + "\n    ".join(problems[-10:])
    return text, result


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--arrival-seconds", type=float, default=60.0, help="students arrive within this time")
    parser.add_argument("--page-timeout", type=float, default=300.0, help="seconds a page may take")
    parser.add_argument("--filters-timeout", type=float, default=900.0, help="seconds a Filters picture may take")
    parser.add_argument("--total-timeout", type=float, default=2400.0, help="seconds after the last arrival")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--client", choices=["protocol", "browser"], default="protocol",
                        help="protocol: Streamlit's websocket protocol from Python, one asyncio task per student "
                             "(light); browser: a chromium context per student, through Playwright")
    parser.add_argument("--browser-nice", type=int, default=10,
                        help="with --client browser: niceness of the browsers (0: none)")
    parser.add_argument("--cold", action="store_true", help="no warm-up: the first student loads the model")
    parser.add_argument("--url", help="a server started elsewhere (no RSS or CPU figures then); e.g. the nginx "
                                      "of `python tools/topology.py`")
    parser.add_argument("--topology", action="store_true",
                        help="start Redis, workers, replicas and nginx (tools/topology.py) and run the class "
                             "through nginx")
    parser.add_argument("--replicas", type=int, default=2, help="with --topology: app replicas")
    parser.add_argument("--workers", type=int, default=1, help="with --topology: queue workers")
    parser.add_argument("--fault", choices=["worker", "replica", "redis"],
                        help="with --topology: kill a worker during an atlas, kill a replica, or restart Redis")
    parser.add_argument("--fault-at", type=float,
                        help="seconds into the class when a replica or Redis fault strikes (default: half "
                             "the arrival time)")
    parser.add_argument("--cache-dir", help="CONVVIZ_CACHE_DIR of the server (default: a new, empty one)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--per-session-cpu", type=int, default=0, metavar="N",
                        help="instead: server CPU of N new visitors of a cached page, one at a time")
    parser.add_argument("--proxy", action="store_true", help="with --per-session-cpu: nginx in front")
    parser.add_argument("--streamlit-arg", action="append", default=[], metavar="OPTION",
                        help="an option for `streamlit run`, e.g. --streamlit-arg=--server.fileWatcherType=auto")
    arguments = parser.parse_args(argv)
    if not 1 <= arguments.students <= 200:
        parser.error("--students must be between 1 and 200")
    return arguments


def main(argv=None):
    args = parse_arguments(argv)
    if (args.client == "browser" or args.per_session_cpu) and not os.path.exists(CHROMIUM):
        raise SystemExit(f"needs Debian's chromium at {CHROMIUM} (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="convviz-bench-") as scratch:
        scratch = Path(scratch)
        cache_dir = Path(args.cache_dir) if args.cache_dir else scratch / "cache"
        if args.topology:
            text, result = run_topology_class(args, scratch / "topology")
        elif args.url:
            if args.per_session_cpu:
                raise SystemExit("--per-session-cpu measures a server this script starts")
            students, wall, client_cpu = asyncio.run(run_class(args, args.url.rstrip("/"), None))
            text, result = report_class(args, students, wall, None, client_cpu)
        else:
            with streamlit_server(scratch / "streamlit.log", cache_dir, extra_arguments=args.streamlit_arg) as (
                base_url, server):
                print(f"server: {base_url} (pid {server.pid}), log {scratch / 'streamlit.log'}", flush=True)
                if args.per_session_cpu:
                    proxy = nginx_proxy(int(base_url.rsplit(":", 1)[1]), scratch) if args.proxy \
                        else contextlib.nullcontext(base_url)
                    with proxy as front:
                        print(f"new visitors through {'nginx' if args.proxy else 'Streamlit alone'}:", flush=True)
                        result = measure_per_session_cpu(args, front, server)
                    text = ""
                else:
                    if not args.cold:
                        # The teacher opens the app before the class: the model is loaded
                        # and the default page computed for the sample photo.
                        from convviz_app.readiness import check_readiness

                        began = time.monotonic()
                        ready, reason = check_readiness(base_url, timeout=args.page_timeout)
                        print(f"warm-up (the app's readiness check): {reason}, {time.monotonic() - began:.1f} s",
                              flush=True)
                    with ServerMonitor(server.pid) as monitor:
                        students, wall, client_cpu = asyncio.run(run_class(args, base_url, monitor))
                    text, result = report_class(args, students, wall, monitor, client_cpu)
                    if any(student.errors for student in students):
                        log = (scratch / "streamlit.log").read_text(errors="replace")
                        problems = [line for line in log.splitlines() if re.search(r"Error|Exception|Traceback", line)
                                    and "cuInit" not in line]
                        text += "\n  server log, its errors (last 40):\n    " + "\n    ".join(problems[-40:])
    if text:
        print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0 if not result.get("errors") and not result.get("wrong_images") else 1


if __name__ == "__main__":
    sys.exit(main())
