"""End to end in a real browser: `streamlit run app.py`, driven by Debian's chromium through Playwright.

The first test opens a deep link as a fresh server's very first request and
checks that its page opens without Streamlit's "Page not found" dialog. The
second uploads a photo, opens the Grad-CAM page from the sidebar and waits
for the overlay. Run this file as a script to take a screenshot of every page
for the README instead:

    python tests/test_e2e_browser.py docs/screenshots
"""

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import cv2
import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
SERVER_START_SECONDS = 120
# The first Grad-CAM on a fresh machine converts EfficientNet-Lite0 and traces
# its graph; on two busy cores that can take a minute.
PAGE_SECONDS = 240
VIEWPORT = {"width": 1440, "height": 1000}

playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason=f"needs Debian's chromium at {CHROMIUM} (apt-get install chromium)"
)


def free_port():
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_streamlit(port, log, extra_env=None):
    """Starts `streamlit run app.py` on 127.0.0.1:port, its output going to the open file `log`.

    Returns:
        The server's `subprocess.Popen`.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    command = [
        sys.executable, "-m", "streamlit", "run", "app.py",
        "--server.port", str(port),
        "--server.address", "127.0.0.1",
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
    ]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


@contextlib.contextmanager
def streamlit_server(log_path, extra_env=None):
    """Runs `streamlit run app.py` on a free localhost port until the block ends.

    Yields:
        The app's base URL.
    """
    port = free_port()
    with open(log_path, "wb") as log:
        process = start_streamlit(port, log, extra_env)
        try:
            base_url = f"http://127.0.0.1:{port}"
            wait_until_healthy(base_url, process, log_path)
            yield base_url
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=20)


def wait_until_healthy(base_url, process, log_path):
    """Polls `/_stcore/health` until the server answers "ok"."""
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited early:\n{Path(log_path).read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(f"{base_url}/_stcore/health", timeout=2) as response:
                if response.status == 200 and response.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"streamlit did not become healthy:\n{Path(log_path).read_text(errors='replace')}")


@contextlib.contextmanager
def chromium_page(playwright):
    """A fresh page of Debian's headless chromium."""
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    try:
        context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
        yield context.new_page()
    finally:
        browser.close()


def wait_for_app_idle(page, timeout_seconds=PAGE_SECONDS):
    """Waits until Streamlit has finished running the script."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout_seconds * 1000)
    # Give a run that was just asked for a moment to start.
    page.wait_for_timeout(500)
    page.wait_for_function(
        """() => document.querySelector('[data-testid="stApp"]')
                   .getAttribute('data-test-script-state') === 'notRunning'""",
        timeout=timeout_seconds * 1000,
    )


def screenshot_whole_page(page, path, max_height=8000):
    """Saves the whole page: Streamlit scrolls inside its main area, so the viewport grows to fit it."""
    height = page.evaluate(
        """() => Math.max(...['stMain', 'stSidebarContent'].map(id => {
                 const element = document.querySelector(`[data-testid="${id}"]`);
                 return element ? element.scrollHeight : 0;
             }))"""
    )
    page.set_viewport_size({"width": VIEWPORT["width"], "height": min(max(height, VIEWPORT["height"]), max_height)})
    page.wait_for_timeout(1500)
    page.screenshot(path=str(path))
    page.set_viewport_size(VIEWPORT)


def open_page(page, title):
    """Opens a page from the sidebar's navigation."""
    page.locator('[data-testid="stSidebarNav"] a').filter(has_text=title).first.click()


def upload_photo(page, path):
    """Uploads a photo through the sidebar's image uploader."""
    uploader = page.locator('[data-testid="stFileUploader"]').filter(has_text="upload a photo")
    uploader.locator('input[type="file"]').set_input_files(str(path))


def write_photo(folder):
    """Writes a real photograph (scikit-image's espresso, CC0) as a JPEG file."""
    from convviz_core.inputs.samples import sample_image

    path = Path(folder) / "espresso.jpg"
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(sample_image("coffee"), cv2.COLOR_RGB2BGR))
    assert ok
    path.write_bytes(encoded.tobytes())
    return path


# Records whether a "Page not found" dialog was ever shown, even for a moment.
WATCH_FOR_PAGE_NOT_FOUND = """
window.__convvizPageNotFound = false;
new MutationObserver(records => {
    for (const record of records) {
        for (const node of record.addedNodes) {
            if ((node.textContent || "").includes("Page not found")) {
                window.__convvizPageNotFound = true;
            }
        }
    }
}).observe(document, {childList: true, subtree: true});
"""


def test_a_deep_link_as_the_first_request_opens_its_page(tmp_path):
    with streamlit_server(tmp_path / "streamlit.log") as base_url, playwright_api.sync_playwright() as playwright:
        with chromium_page(playwright) as page:
            page.add_init_script(WATCH_FOR_PAGE_NOT_FOUND)
            page.goto(f"{base_url}/grad-cam", timeout=PAGE_SECONDS * 1000)
            page.get_by_text("Heatmap × 0.40 + image").wait_for(timeout=PAGE_SECONDS * 1000)
            wait_for_app_idle(page)
            assert not page.evaluate("window.__convvizPageNotFound")
            # The page, with its view's address (convviz_app/address.py).
            assert urllib.parse.urlsplit(page.url).path == "/grad-cam"
            assert dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(page.url).query))["layer"] == "top_activation"
            # The app's own navigation, not the file names of an old-style `pages/` app.
            links = page.locator('[data-testid="stSidebarNav"] a').all_inner_texts()
            assert [link.split()[-1] for link in links] == ["Lesson", "Activations", "Filters", "unit", "Grad-CAM", "Compare", "Live", "Dataset", "Model"]
            assert page.locator('[data-testid="stException"]').count() == 0


SHARED_LESSON_LINK = {
    "model": "small-convnet", "image": "coffee", "class": "0", "layer": "conv2d_3", "method": "layer-cam",
    "alpha": "0.70", "lesson": "1",
}


def test_a_shared_lesson_link_as_the_first_request_opens_exactly_its_view(tmp_path):
    query = urllib.parse.urlencode(SHARED_LESSON_LINK)
    with streamlit_server(tmp_path / "streamlit.log") as base_url, playwright_api.sync_playwright() as playwright:
        with chromium_page(playwright) as page:
            page.add_init_script(WATCH_FOR_PAGE_NOT_FOUND)
            page.goto(f"{base_url}/grad-cam?{query}", timeout=PAGE_SECONDS * 1000)
            page.get_by_text("Heatmap × 0.70 + image").wait_for(timeout=PAGE_SECONDS * 1000)
            wait_for_app_idle(page)
            assert not page.evaluate("window.__convvizPageNotFound")
            main = page.locator('[data-testid="stMain"]')
            assert main.get_by_text("Layer-CAM of 'disc' at conv2d_3").is_visible()
            assert main.get_by_text("Image: the sample photo 'Coffee'").is_visible()
            # The address is still the link, and the lesson hides the navigation and the advanced controls.
            address = urllib.parse.urlsplit(page.url)
            assert address.path == "/grad-cam"
            assert dict(urllib.parse.parse_qsl(address.query)) == SHARED_LESSON_LINK
            assert page.locator('[data-testid="stSidebarNav"]').count() == 0
            assert main.get_by_text("Overlay strength").is_visible()
            assert main.get_by_text("Method", exact=True).count() == 0
            assert page.locator('[data-testid="stException"]').count() == 0

            # The share panel gives the same link back, for the projector.
            page.locator('[data-testid="stSidebarCollapsedControl"] button, [data-testid="stExpandSidebarButton"]').first.click()
            page.get_by_role("button", name="Share this view").click()
            shared = page.locator('[data-testid="stCode"] code').first
            shared.wait_for(timeout=PAGE_SECONDS * 1000)
            link = urllib.parse.urlsplit(shared.inner_text().strip())
            assert (link.path, dict(urllib.parse.parse_qsl(link.query))) == ("/grad-cam", SHARED_LESSON_LINK)
            screenshot_whole_page(page, Path(os.environ.get("CONVVIZ_SCREENSHOT_DIR", tmp_path)) / "e2e-shared-lesson-link.png")


def test_a_fresh_servers_default_filters_grid_is_ready_for_the_first_visitor(tmp_path):
    # A server computes its default atlases in the background once app.py is
    # first imported: here by the readiness check a load balancer (or
    # Docker's HEALTHCHECK) runs right after the start.
    from convviz_app import readiness

    extra_env = {"CONVVIZ_WARM_UP": "1", "CONVVIZ_CACHE_DIR": str(tmp_path / "cache"), "CONVVIZ_PRECISION": "float32"}
    with streamlit_server(tmp_path / "streamlit.log", extra_env) as base_url, playwright_api.sync_playwright() as playwright:
        started = time.monotonic()
        assert readiness.main([base_url]) == 0
        atlases = tmp_path / "cache" / "atlases"
        deadline = started + 300
        while not list(atlases.glob("efficientnet-lite0-*.npy")) and time.monotonic() < deadline:
            time.sleep(1)
        warmed = time.monotonic() - started
        assert list(atlases.glob("efficientnet-lite0-*.npy")), "the default atlas was not computed in the background"
        with chromium_page(playwright) as page:
            opened = time.monotonic()
            page.goto(f"{base_url}/filter-patterns", timeout=PAGE_SECONDS * 1000)
            page.get_by_text("Patterns from the shared cache").wait_for(timeout=PAGE_SECONDS * 1000)
            page.get_by_text("in reading order").first.wait_for(timeout=PAGE_SECONDS * 1000)
            shown = time.monotonic() - opened
        print(f"default atlas ready {warmed:.1f} s after the start; the first visitor's grid in {shown:.1f} s")


def test_upload_a_photo_and_see_its_grad_cam(tmp_path):
    photo = write_photo(tmp_path)
    screenshot = Path(os.environ.get("CONVVIZ_SCREENSHOT_DIR", tmp_path)) / "e2e-grad-cam.png"
    with streamlit_server(tmp_path / "streamlit.log") as base_url, playwright_api.sync_playwright() as playwright:
        with chromium_page(playwright) as page:
            page.goto(base_url, timeout=PAGE_SECONDS * 1000)
            wait_for_app_idle(page)
            upload_photo(page, photo)
            page.get_by_text("Image: espresso.jpg").wait_for(timeout=PAGE_SECONDS * 1000)

            open_page(page, "Grad-CAM")
            overlay = page.get_by_text("Heatmap × 0.40 + image")
            overlay.wait_for(timeout=PAGE_SECONDS * 1000)
            wait_for_app_idle(page)

            main = page.locator('[data-testid="stMain"]')
            assert main.get_by_text("Grad-CAM: where the model looked").is_visible()
            assert main.get_by_text("Image: espresso.jpg").is_visible()
            # The original and the overlay are pictures; the heatmap is a Plotly chart.
            images = main.locator('[data-testid="stImage"] img')
            assert images.count() >= 2
            assert all(images.nth(index).evaluate("img => img.naturalWidth > 0") for index in range(images.count()))
            assert main.locator(".js-plotly-plot").count() == 1
            # The heatmap explains the top class: an espresso, for this photo.
            assert main.get_by_text("Grad-CAM of 'espresso' at top_activation").is_visible()
            assert main.get_by_role("button", name="Download the overlay (PNG)").is_visible()
            assert page.locator('[data-testid="stException"]').count() == 0
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot_whole_page(page, screenshot)

            # The CAM family side by side, each map scored against random maps.
            open_page(page, "Compare")
            page.get_by_text("Download the comparison (PNG)").wait_for(timeout=PAGE_SECONDS * 1000)
            wait_for_app_idle(page)
            assert main.get_by_text("Compare explanations").is_visible()
            assert main.get_by_text("Grad-CAM on the image", exact=True).is_visible()
            assert main.get_by_text("Eigen-CAM on the image", exact=True).is_visible()
            assert main.get_by_role("button", name="Compute Score-CAM").is_visible()
            assert page.locator('[data-testid="stException"]').count() == 0
    assert screenshot.stat().st_size > 10_000


def capture_all_pages(folder):
    """Takes a full-page screenshot of every page with the defaults (for the README)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pages = [
        ("Activations", "activations.png", "Dead channels"),
        ("Filters", "filters.png", "Where it fires on your image"),
        ("Grad-CAM", "grad-cam.png", "Heatmap × 0.40 + image"),
        ("Compare", "compare.png", "Download the comparison (PNG)"),
        ("Model", "model.png", "Total parameters"),
    ]
    with tempfile.TemporaryDirectory() as logs, streamlit_server(Path(logs) / "streamlit.log") as base_url:
        with playwright_api.sync_playwright() as playwright, chromium_page(playwright) as page:
            page.goto(base_url, timeout=PAGE_SECONDS * 1000)
            wait_for_app_idle(page)
            for title, file_name, ready_text in pages:
                open_page(page, title)
                # The filter atlas may have to be computed first: allow it time.
                page.get_by_text(ready_text).first.wait_for(timeout=900 * 1000)
                wait_for_app_idle(page, timeout_seconds=900)
                screenshot_whole_page(page, folder / file_name)
                print(f"saved {folder / file_name}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    capture_all_pages(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs" / "screenshots")
