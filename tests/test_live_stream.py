"""The Live page's stream (`convviz_app.live_stream`) and the page itself, without a browser.

The processor runs on the known-answer model of `test_gradcam.py` (the top
class is 1, the strongest channel 1), and on a stand-in for `analyze_frame`
that blocks until released, to check that frames arriving meanwhile are
dropped rather than queued. The real stream is tested in a browser by
`test_live_browser.py`.
"""

import asyncio
import subprocess
import sys
import threading
from pathlib import Path

import av
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from convviz_app import figures, live_stream
from convviz_app.live_stream import (
    CAPTION_HEIGHT,
    GAP,
    ConnectionWatch,
    LiveProcessor,
    LiveSettings,
    live_picture,
    rtc_configuration,
)
from convviz_core import InputError, VisionModel
from convviz_core.live import analyze_frame

from test_gradcam import build_known_model

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app.py"
TIMEOUT = 240


@pytest.fixture(scope="module")
def known_model():
    return VisionModel(build_known_model("dense_softmax"), class_names=["zero", "one", "two"])


def camera_frame(height=48, width=64):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def video_frame(image):
    return av.VideoFrame.from_ndarray(image, format="rgb24")


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, {"iceServers": []}),
        ("", {"iceServers": []}),
        (
            '[{"urls": ["turn:turn.example.org:3478"], "username": "class", "credential": "secret"}]',
            {"iceServers": [{"urls": ["turn:turn.example.org:3478"], "username": "class", "credential": "secret"}]},
        ),
    ],
)
def test_no_ice_server_is_contacted_unless_named(value, expected):
    environ = {} if value is None else {"CONVVIZ_ICE_SERVERS": value}
    assert rtc_configuration(environ) == expected


@pytest.mark.parametrize(
    "value, message",
    [
        ("[{urls: 1}", "CONVVIZ_ICE_SERVERS is not valid JSON"),
        ('{"urls": "turn:x"}', "CONVVIZ_ICE_SERVERS must be a JSON list of objects"),
        ('[{"username": "u"}]', "CONVVIZ_ICE_SERVERS must be a JSON list of objects"),
    ],
)
def test_a_wrong_ice_server_setting_says_what_to_write(value, message):
    with pytest.raises(InputError, match=message):
        rtc_configuration({"CONVVIZ_ICE_SERVERS": value})


def test_the_picture_puts_the_overlay_left_and_the_channels_right(known_model):
    frame = camera_frame()
    analysis = analyze_frame(known_model, frame, "conv", channel_count=2, columns=2)
    picture = live_picture(analysis, "one 66%")
    # Two 4x4 channels side by side, each as tall as the frame: 48 px squares.
    assert picture.shape == (CAPTION_HEIGHT + 48, 64 + GAP + 48 + GAP + 48, 3)
    np.testing.assert_array_equal(picture[CAPTION_HEIGHT:, :64], analysis.overlay)
    colored = figures.viridis(analysis.channel_grid)
    # Channel 1 (17 - a: brightest at the top left) first; each value a 12x12 square.
    # (The channel's number is written in the tile's top left corner; compare below it.)
    first = picture[CAPTION_HEIGHT:, 64 + GAP : 64 + GAP + 48]
    np.testing.assert_array_equal(first[24:, :], np.repeat(np.repeat(colored[2:4, 0:4], 12, 0), 12, 1))
    second = picture[CAPTION_HEIGHT:, 64 + 2 * GAP + 48 :]
    np.testing.assert_array_equal(second[24:, :], np.repeat(np.repeat(colored[2:4, 4:8], 12, 0), 12, 1))
    assert picture[:CAPTION_HEIGHT].max() == 255  # the caption is written


def test_processing_a_frame_counts_it_and_names_the_class(known_model):
    ticks = iter(np.arange(0.0, 100.0, 0.25))
    processor = LiveProcessor(LiveSettings(known_model, "conv", channel_count=2), clock=lambda: next(ticks))
    for _ in range(3):
        picture = processor.process(camera_frame())
    assert picture.shape == (CAPTION_HEIGHT + 48, 64 + GAP + 48 + GAP + 48, 3)
    stats = processor.stats()
    assert (stats.frames, stats.dropped, stats.label, stats.error) == (3, 0, "one", "")
    # Each frame takes one tick from arrival to picture, and a new one is done every two ticks.
    assert stats.latency_ms == pytest.approx(250.0)
    assert stats.frames_per_second == pytest.approx(2.0)


def test_a_layer_that_cannot_be_shown_is_reported_not_raised(known_model):
    processor = LiveProcessor(LiveSettings(known_model, "conv"))
    processor.update(LiveSettings(known_model, "nope"))
    frame = camera_frame()
    picture = processor.process(frame)
    assert picture.shape == frame.shape
    assert "Cannot show layer 'nope'" in processor.stats().error
    assert processor.stats().frames == 0


def test_frames_arriving_while_one_is_processed_are_dropped_not_queued(known_model, monkeypatch):
    started, release, seen = threading.Event(), threading.Event(), []

    def slow_analysis(model, frame, *args):
        seen.append(int(frame[0, 0, 0]))
        started.set()
        release.wait(10)
        return analyze_frame(model, frame, *args)

    monkeypatch.setattr(live_stream, "analyze_frame", slow_analysis)
    processor = LiveProcessor(LiveSettings(known_model, "conv", channel_count=2))
    frames = [video_frame(np.full((48, 64, 3), value, np.uint8)) for value in range(6)]

    async def feed():
        # The first frame starts the thread; until a picture exists, the camera frame goes back.
        [first] = await processor.recv_queued(frames[:1])
        assert first is frames[0]
        assert started.wait(10)
        # While frame 0 is processed: one call with two queued frames, then two calls of one.
        returned = [await processor.recv_queued(frames[1:3]), await processor.recv_queued(frames[3:4])]
        returned.append(await processor.recv_queued(frames[4:5]))
        return returned

    try:
        returned = asyncio.run(feed())
        assert all(batch[0] in frames for batch in returned)  # nothing processed yet: the camera frames
        release.set()
        deadline = threading.Event()
        for _ in range(100):
            if processor.stats().frames == 2:
                break
            deadline.wait(0.1)
    finally:
        release.set()
        processor.on_ended()
    # Frame 0, then only the newest (4): 1 and 2 came together, 3 was replaced by 4.
    assert seen == [0, 4]
    stats = processor.stats()
    assert (stats.frames, stats.dropped) == (2, 3)
    [picture] = asyncio.run(processor.recv_queued(frames[5:6]))
    assert (picture.width, picture.height) == (64 + GAP + 48 + GAP + 48, CAPTION_HEIGHT + 48)
    processor._thread.join(5)
    assert not processor._thread.is_alive()


@pytest.mark.parametrize(
    "events, expected",
    [
        # (seconds, active, connected) -> the state after each.
        ([(0, False, False)], ["idle"]),
        (
            [(0, True, False), (2, True, False), (3, True, True), (60, True, True)],
            ["connecting", "connecting", "live", "live"],
        ),
        ([(0, True, False), (10, True, False), (16, True, False)], ["connecting", "connecting", "failed"]),
        # The browser gave up (ICE failed) after 8 s: failed until the next start.
        (
            [(0, True, False), (8, False, False), (9, False, False), (20, True, False)],
            ["connecting", "failed", "failed", "connecting"],
        ),
        # Stopped by the user at once, or after it connected: not a failure.
        ([(0, True, False), (1, False, False)], ["connecting", "idle"]),
        ([(0, True, False), (3, True, True), (30, False, False)], ["connecting", "live", "idle"]),
    ],
)
def test_the_connection_watch(events, expected):
    watch = ConnectionWatch(connect_seconds=15)
    assert [watch.observe(active, connected, now) for now, active, connected in events] == expected


def test_streamlit_webrtc_loads_after_tensorflow_without_crashing():
    # pylibsrtp's statically linked OpenSSL clashes with TensorFlow's BoringSSL
    # (`import tensorflow; import pylibsrtp` dies with SIGSEGV); see import_streamlit_webrtc.
    code = (
        "import tensorflow\n"
        "from convviz_app.live_stream import import_streamlit_webrtc\n"
        "webrtc = import_streamlit_webrtc()\n"
        "import aiortc\n"
        "print('loaded', webrtc.webrtc_streamer.__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "loaded webrtc_streamer" in result.stdout


def open_live_page(**query):
    """Opens /live (with a link's query) as a new session's first request."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    for key, value in query.items():
        at.query_params[key] = value
    at.switch_page("pages/live.py").run()
    assert not at.exception, [exception.value for exception in at.exception]
    return at


def test_the_page_offers_the_layers_and_the_snapshot_camera_where_the_stream_cannot_run(private_cache_dir):
    # AppTest has no WebSocket session, so the component cannot run: the page says so.
    at = open_live_page()
    assert at.title[0].value == "Live: the network watching your camera"
    assert at.selectbox(key="live_layer:builtin:efficientnet-lite0").value == "top_activation"
    [warning] = at.warning
    assert "The live camera stream cannot run here" in warning.value
    assert "under **Image**, turn on **Camera**" in warning.value


def test_a_link_opens_the_live_view_with_its_model_layer_and_overlay_strength(private_cache_dir):
    at = open_live_page(model="small-convnet", layer="conv2d_1", alpha="0.70")
    assert at.selectbox(key="live_layer:builtin:small-convnet").value == "conv2d_1"
    assert at.slider(key="live_alpha").value == pytest.approx(0.7)
    assert dict(at.query_params) == {"model": "small-convnet", "image": "chelsea", "layer": "conv2d_1", "alpha": "0.70"}
    at.slider(key="live_alpha").set_value(0.25).run()
    assert at.query_params["alpha"] == "0.25"


def test_the_page_says_when_streamlit_webrtc_is_missing(monkeypatch, private_cache_dir):
    def missing():
        raise ImportError("No module named 'streamlit_webrtc'", name="streamlit_webrtc")

    monkeypatch.setattr(live_stream, "import_streamlit_webrtc", missing)
    at = open_live_page()
    [warning] = at.warning
    assert warning.value.startswith("The live camera stream is not available on this server (streamlit_webrtc is not installed).")
    assert "turn on **Camera**" in warning.value
