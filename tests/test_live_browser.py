"""The Live page in a real browser: chromium's fake camera streamed over WebRTC to a real server.

Chromium plays a clip of the sample photos (`tools/camera_clip.py`, as a
YUV4MPEG2 file) as its camera (`--use-fake-device-for-media-stream
--use-file-for-fake-video-capture`), and grants it without asking
(`--use-fake-ui-for-media-stream`). The first test starts the stream on
`/live` and checks that processed frames come back: the page's frame
counter grows, and the video element plays the server's picture (wider than
the camera: the channels are beside the overlay) with colour in it. The
second makes WebRTC fail as it does on a network that lets the browser use
no UDP (chromium's WebRTC IP handling policy "disable_non_proxied_udp", with
no proxy and no TURN server: it offers no ICE candidate at all) and checks
that the page says so and points to the snapshot camera. Run this file as a
script to save screenshots of both:

    python tests/test_live_browser.py docs/screenshots
"""

import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import pytest

from test_e2e_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    PAGE_SECONDS,
    VIEWPORT,
    playwright_api,
    pytestmark,  # noqa: F401  (skipped where chromium is missing)
    screenshot_whole_page,
    streamlit_server,
    wait_for_app_idle,
)

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from convviz_app.live_stream import CAPTION_HEIGHT, GAP, LIVE_CHANNEL_COLUMNS  # noqa: E402
from convviz_core.live import DEFAULT_CHANNEL_COUNT  # noqa: E402
from tools.camera_clip import panning_frames, write_y4m  # noqa: E402

CAMERA = (240, 320)  # (height, width) of the fake camera's clip
COMPONENT = 'iframe[title="streamlit_webrtc.component.webrtc_streamer"]'
# From Start to the first processed frame: signalling, ICE, and the first frame on a busy machine.
STREAM_SECONDS = 90
NO_UDP = {"webrtc": {"ip_handling_policy": "disable_non_proxied_udp"}}


def expected_picture_size():
    """(width, height) of the server's picture for a frame of the fake camera (`live_picture`)."""
    height, width = CAMERA
    rows = -(-DEFAULT_CHANNEL_COUNT // LIVE_CHANNEL_COLUMNS)
    side = (height - GAP * (rows - 1)) // rows
    return width + GAP + LIVE_CHANNEL_COLUMNS * side + (LIVE_CHANNEL_COLUMNS - 1) * GAP, CAPTION_HEIGHT + height


@contextlib.contextmanager
def camera_browser(playwright, folder, preferences=None, size=CAMERA):
    """A fresh page of headless chromium whose camera plays a clip of the sample photos."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    clip = write_y4m(panning_frames(seconds=2, fps=15, size=size), Path(folder) / "camera.y4m", fps=15)
    profile = Path(folder) / "profile"
    (profile / "Default").mkdir(parents=True, exist_ok=True)
    (profile / "Default" / "Preferences").write_text(json.dumps(preferences or {}))
    context = playwright.chromium.launch_persistent_context(
        str(profile),
        executable_path=CHROMIUM,
        headless=True,
        viewport=VIEWPORT,
        device_scale_factor=1,
        args=CHROMIUM_ARGS + [
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={clip}",
        ],
    )
    try:
        yield context.pages[0] if context.pages else context.new_page()
    finally:
        context.close()


def start_the_camera(page, base_url):
    """Opens /live and presses the component's Start button."""
    page.goto(f"{base_url}/live", timeout=PAGE_SECONDS * 1000)
    button = page.frame_locator(COMPONENT).get_by_role("button", name="Start the camera")
    button.wait_for(timeout=PAGE_SECONDS * 1000)
    wait_for_app_idle(page)
    button.click()


def frames_shown(page):
    """The page's count of processed frames, or None before the first."""
    for text in page.locator('[data-testid="stMarkdown"]').all_inner_texts():
        if "frames shown" in text:
            return int(text.split(" frames shown")[0].split("·")[-1].strip())
    return None


def wait_for_frames(page, at_least, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        count = frames_shown(page)
        if count is not None and count >= at_least:
            return count
        page.wait_for_timeout(500)
    raise AssertionError(f"fewer than {at_least} frames came back in {seconds} s; the page shows: "
                         f"{page.locator('[data-testid=stMain]').inner_text()[-800:]}")


# What the video element shows: its size, how many frames it decoded, and how
# much of a frame drawn on a canvas is not black, and how much is strongly coloured.
READ_VIDEO = """() => {
    const video = document.querySelector("video");
    if (!video || !video.videoWidth) return null;
    const canvas = document.createElement("canvas");
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    const context = canvas.getContext("2d");
    context.drawImage(video, 0, 0);
    const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
    let lit = 0, coloured = 0;
    for (let i = 0; i < pixels.length; i += 4) {
        const [r, g, b] = [pixels[i], pixels[i + 1], pixels[i + 2]];
        if (r + g + b > 60) lit++;
        if (Math.max(r, g, b) - Math.min(r, g, b) > 80) coloured++;
    }
    const count = pixels.length / 4;
    return {width: video.videoWidth, height: video.videoHeight, lit: lit / count, coloured: coloured / count,
            decoded: video.getVideoPlaybackQuality().totalVideoFrames};
}"""


def read_video(page):
    return page.frame_locator(COMPONENT).locator("video").evaluate(READ_VIDEO.replace('document.querySelector("video")', "element").replace("() =>", "(element) =>"))


@pytest.fixture(scope="module")
def live_server(tmp_path_factory):
    # The user's cache, as test_e2e_browser's servers: the Live page writes no atlas, and the
    # converted EfficientNet-Lite0 found there spares the first page a conversion.
    with streamlit_server(tmp_path_factory.mktemp("live-server") / "streamlit.log") as base_url:
        yield base_url


def test_the_fake_camera_streams_and_processed_frames_come_back(live_server, tmp_path):
    with playwright_api.sync_playwright() as playwright, camera_browser(playwright, tmp_path) as page:
        start_the_camera(page, live_server)
        first = wait_for_frames(page, 1, STREAM_SECONDS)
        later = wait_for_frames(page, first + 3, 30)
        assert later > first
        video = read_video(page)
        assert video is not None, "the component shows no video"
        assert (video["width"], video["height"]) == expected_picture_size()
        assert video["decoded"] > 0
        assert video["lit"] > 0.5 and video["coloured"] > 0.05, video
        assert page.locator('[data-testid="stException"]').count() == 0


def test_where_webrtc_cannot_connect_the_page_offers_the_snapshot_camera(live_server, tmp_path):
    with playwright_api.sync_playwright() as playwright, camera_browser(playwright, tmp_path, NO_UDP) as page:
        start_the_camera(page, live_server)
        warning = page.get_by_text("The live stream could not connect")
        warning.wait_for(timeout=STREAM_SECONDS * 1000)
        assert "turn on Camera and take a photo" in warning.inner_text()
        assert frames_shown(page) is None


def save_screenshots(folder):
    """Saves the Live page streaming (live.png) and after a failed connection (live-fallback.png)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch, streamlit_server(Path(scratch) / "streamlit.log") as base_url:
        with playwright_api.sync_playwright() as playwright:
            with camera_browser(playwright, Path(scratch) / "working", size=(480, 640)) as page:
                start_the_camera(page, base_url)
                wait_for_frames(page, 10, STREAM_SECONDS)
                screenshot_whole_page(page, folder / "live.png")
            with camera_browser(playwright, Path(scratch) / "no-udp", NO_UDP) as page:
                start_the_camera(page, base_url)
                page.get_by_text("The live stream could not connect").wait_for(timeout=STREAM_SECONDS * 1000)
                screenshot_whole_page(page, folder / "live-fallback.png")
    print(f"Saved {folder / 'live.png'} and {folder / 'live-fallback.png'}")


if __name__ == "__main__":
    save_screenshots(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots")
