"""The Live page's camera stream: the frame processor, the picture it sends back, and the connection's watch.

streamlit-webrtc (aiortc) receives the browser's camera frames on the
server and hands them to `LiveProcessor`, which shows only the newest frame
(`convviz_core.live.analyze_frame`, in its own thread) and drops the frames
that arrive while it is busy, so the picture stays live instead of falling
behind.
What the picture shows is `live_picture`: the Grad-CAM overlay of the top
class beside the layer's strongest channels, under a line naming the class.

Nothing here draws with Streamlit, so it can be tested without a browser.
No STUN or TURN server is contacted unless `CONVVIZ_ICE_SERVERS` names one
(`rtc_configuration`).
"""

import collections
import dataclasses
import json
import os
import sys
import threading
import time

import cv2
import numpy as np

from convviz_app import figures
from convviz_core import InputError
from convviz_core.live import DEFAULT_CHANNEL_COUNT, analyze_frame

# The environment variable a teacher with a TURN (or STUN) server sets: a JSON
# list of RTCIceServer dicts, e.g.
# [{"urls": ["turn:turn.example.org:3478"], "username": "class", "credential": "secret"}].
ICE_SERVERS_VARIABLE = "CONVVIZ_ICE_SERVERS"
# Four rows of two: a column as tall as the frame beside the overlay.
LIVE_CHANNEL_COLUMNS = 2
# What the page asks of the camera: more pixels would only cost encoding time
# (the model sees 224x224), and 15 frames/s is more than the model keeps up with.
MEDIA_STREAM_CONSTRAINTS = {
    "video": {"width": {"ideal": 640}, "height": {"ideal": 480}, "frameRate": {"ideal": 15}},
    "audio": False,
}
# A stream that has not connected this long after Start will not.
CONNECT_SECONDS = 15.0
# A stream stopped sooner than this before it connected was stopped by the user, not failed.
GIVE_UP_SECONDS = 5.0
# How many recent frames the rates and latencies are taken over.
RECENT_FRAMES = 30
CAPTION_HEIGHT = 36
GAP = 4
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def import_streamlit_webrtc():
    """Imports streamlit-webrtc, whose SRTP library would crash the server once TensorFlow is loaded.

    pylibsrtp 1.0.0's binding links OpenSSL statically and exports its
    symbols (`EVP_*`, `AES_*`...); TensorFlow's `libtensorflow_framework.so.2`
    exports BoringSSL's under the same names, globally. Loaded after
    TensorFlow, the binding's calls bind to BoringSSL's functions and
    `srtp_init()` dies with a segmentation fault, taking the whole server
    down. Loading the binding with RTLD_DEEPBIND makes it use its own
    symbols first, whatever was loaded before.

    Returns:
        The `streamlit_webrtc` module.

    Raises:
        ImportError: If streamlit-webrtc (or aiortc) is not installed.
    """
    if "pylibsrtp" not in sys.modules and hasattr(os, "RTLD_DEEPBIND"):
        flags = sys.getdlopenflags()
        sys.setdlopenflags(flags | os.RTLD_DEEPBIND)
        try:
            import pylibsrtp  # noqa: F401
        finally:
            sys.setdlopenflags(flags)
    import streamlit_webrtc

    return streamlit_webrtc


def rtc_configuration(environ=None):
    """The WebRTC configuration of both ends: no ICE server unless the environment names one.

    With no ICE server, the browser and the server exchange only their own
    addresses (host candidates): that connects on a school's network or on
    the teacher's own machine, and contacts nobody on the internet. A
    server behind NAT needs a TURN server that both ends can reach.

    Args:
        environ: The environment to read. Default: `os.environ`.

    Returns:
        {"iceServers": [...]}, for `webrtc_streamer(rtc_configuration=...)`.

    Raises:
        InputError: If `CONVVIZ_ICE_SERVERS` is not a JSON list of objects
            with "urls".
    """
    text = (os.environ if environ is None else environ).get(ICE_SERVERS_VARIABLE, "").strip()
    if not text:
        return {"iceServers": []}
    try:
        servers = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(
            f"{ICE_SERVERS_VARIABLE} is not valid JSON ({error.msg} at character {error.pos}). Set it to a "
            'list such as [{"urls": ["turn:turn.example.org:3478"], "username": "u", "credential": "p"}].'
        ) from None
    if not isinstance(servers, list) or not all(isinstance(server, dict) and server.get("urls") for server in servers):
        raise InputError(
            f"{ICE_SERVERS_VARIABLE} must be a JSON list of objects, each with \"urls\" (and \"username\" and "
            f"\"credential\" for TURN). Received: {text[:200]}"
        )
    return {"iceServers": servers}


def live_picture(analysis, caption):
    """The picture the Live page streams back: the overlay, the strongest channels beside it, a caption above.

    Args:
        analysis: A `FrameAnalysis` of one frame.
        caption: The text of the line above, e.g. the class and its probability.

    Returns:
        uint8 RGB array (caption height + frame height, frame width + the
        channel column's width, 3).
    """
    frame = analysis.overlay
    height, width = frame.shape[:2]
    tile_height, tile_width = analysis.heatmap.shape
    count = len(analysis.channels)
    columns = min(LIVE_CHANNEL_COLUMNS, count)
    rows = -(-count // columns)
    side = max(8, (height - GAP * (rows - 1)) // rows)
    tile_size = (side, max(1, round(side * tile_width / tile_height)))
    column_width = columns * tile_size[1] + (columns - 1) * GAP
    picture = np.zeros((CAPTION_HEIGHT + height, width + GAP + column_width, 3), np.uint8)
    picture[CAPTION_HEIGHT:, :width] = frame
    colored = figures.viridis(analysis.channel_grid)
    for index, channel in enumerate(analysis.channels):
        row, column = divmod(index, columns)
        tile = colored[row * tile_height : (row + 1) * tile_height, column * tile_width : (column + 1) * tile_width]
        top = CAPTION_HEIGHT + row * (tile_size[0] + GAP)
        left = width + GAP + column * (tile_size[1] + GAP)
        # Nearest neighbour: each value of a small feature map stays a crisp square.
        picture[top : top + tile_size[0], left : left + tile_size[1]] = cv2.resize(
            tile, tile_size[::-1], interpolation=cv2.INTER_NEAREST
        )
        _put_text(picture, f"#{channel}", (left + 4, top + 18), 0.5)
    _put_text(picture, caption, (8, CAPTION_HEIGHT - 11), 0.7)
    return picture


def _put_text(picture, text, origin, scale):
    """Writes white text with a dark outline, readable on any colour."""
    cv2.putText(picture, text, origin, _FONT, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(picture, text, origin, _FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)


@dataclasses.dataclass(frozen=True)
class LiveSettings:
    """What a stream shows: set by the page, read by the processor for each frame."""

    model: object
    layer_name: str
    alpha: float = 0.4
    channel_count: int = DEFAULT_CHANNEL_COUNT


@dataclasses.dataclass(frozen=True)
class LiveStats:
    """How a stream is doing, for the page's status line.

    Attributes:
        frames: Frames processed and sent back.
        dropped: Frames skipped because a newer one had arrived.
        frames_per_second: Processed frames per second, over the recent frames.
        latency_ms: Median time from a frame's arrival at the processor to
            its picture, over the recent frames.
        latency_p95_ms: The 95th percentile of the same.
        label: The top class of the last frame ("" before the first).
        probability: Its probability.
        error: The message of a user error (e.g. a model without classes), or "".
    """

    frames: int = 0
    dropped: int = 0
    frames_per_second: float = 0.0
    latency_ms: float = 0.0
    latency_p95_ms: float = 0.0
    label: str = ""
    probability: float = 0.0
    error: str = ""


class LiveProcessor:
    """A streamlit-webrtc video processor that shows the newest camera frame through a layer.

    streamlit-webrtc calls `recv_queued` from its worker thread with the
    frames that arrived since its last call, and sends back what it returns.
    `recv_queued` never waits for the network: it hands the newest frame to
    this processor's own thread (replacing a frame still waiting there:
    dropped) and returns the newest picture that thread has made. So the
    picture is at most one computation behind the camera, and a slow frame
    (a busy server) cannot stall the stream (streamlit-webrtc stops a stream
    whose `recv_queued` takes over 10 s). The page changes what is shown
    with `update` from the script thread.

    Args:
        settings: The first `LiveSettings`.
        clock: Function returning seconds (monotonic), for tests.
        recent_frames: How many recent frames `stats` describes.
    """

    def __init__(self, settings, clock=time.monotonic, recent_frames=RECENT_FRAMES):
        self._lock = threading.Lock()
        self._frame_waiting = threading.Condition(self._lock)
        self._settings = settings
        self._clock = clock
        self._pending = None  # (RGB frame, arrival time), the newest frame not yet processed
        self._picture = None  # the newest picture, as an av.VideoFrame
        self._thread = None
        self._stopped = False
        self._frames = 0
        self._dropped = 0
        self._finished = collections.deque(maxlen=recent_frames)  # times pictures were done
        self._latencies = collections.deque(maxlen=recent_frames)
        self._label, self._probability, self._error = "", 0.0, ""

    def update(self, settings):
        """Shows the next frame with new settings (model, layer, overlay strength)."""
        with self._lock:
            self._settings = settings

    def process(self, frame, arrived=None):
        """Shows one RGB frame through the current layer, in the calling thread.

        Args:
            frame: RGB uint8 array (height, width, 3).
            arrived: When the frame arrived (`clock` seconds). Default: now.

        Returns:
            uint8 RGB array, `live_picture` of the frame, or the frame itself
            with a note on it when the settings cannot show it (the error is
            in `stats().error`).
        """
        arrived = self._clock() if arrived is None else arrived
        with self._lock:
            settings = self._settings
        try:
            analysis = analyze_frame(
                settings.model, frame, settings.layer_name, settings.channel_count,
                LIVE_CHANNEL_COLUMNS, settings.alpha,
            )
        except InputError as error:
            with self._lock:
                self._error = str(error)
            picture = np.array(frame, dtype=np.uint8, copy=True)
            _put_text(picture, "Cannot show this layer: see the page.", (8, 24), 0.6)
            return picture
        rate = self.stats().frames_per_second
        caption = f"{analysis.label}  {analysis.probability:.0%}   {analysis.layer_name}"
        if rate:
            caption += f"   {rate:.1f} frames/s"
        picture = live_picture(analysis, caption)
        done = self._clock()
        with self._lock:
            self._frames += 1
            self._finished.append(done)
            self._latencies.append(done - arrived)
            self._label, self._probability, self._error = analysis.label, analysis.probability, ""
        return picture

    async def recv_queued(self, frames):
        """Hands the newest frame to the processing thread and returns the newest picture, at once.

        Args:
            frames: The `av.VideoFrame`s that arrived since the last call, oldest first.

        Returns:
            [one av.VideoFrame]: the newest picture, or the newest camera
            frame itself until the first picture is ready.
        """
        newest = frames[-1]
        image = newest.to_ndarray(format="rgb24")
        with self._lock:
            self._dropped += len(frames) - 1 + (self._pending is not None)
            self._pending = (image, self._clock())
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(target=self._run, name="convviz-live", daemon=True)
                self._thread.start()
            self._frame_waiting.notify()
            picture = self._picture
        return [picture if picture is not None else newest]

    def on_ended(self):
        """Stops the processing thread (streamlit-webrtc calls it when the stream ends)."""
        with self._lock:
            self._stopped = True
            self._frame_waiting.notify()

    def _run(self):
        import av

        while True:
            with self._lock:
                while self._pending is None and not self._stopped:
                    self._frame_waiting.wait()
                if self._stopped:
                    return
                (image, arrived), self._pending = self._pending, None
            try:
                picture = av.VideoFrame.from_ndarray(self.process(image, arrived), format="rgb24")
            except Exception as error:  # noqa: BLE001  (a failed frame must not end the stream)
                with self._lock:
                    self._error = f"A frame could not be shown ({type(error).__name__}: {error})."
                continue
            with self._lock:
                self._picture = picture

    def stats(self):
        """A `LiveStats` of the recent frames."""
        with self._lock:
            finished = list(self._finished)
            latencies = list(self._latencies)
            span = finished[-1] - finished[0] if len(finished) > 1 else 0.0
            return LiveStats(
                frames=self._frames,
                dropped=self._dropped,
                frames_per_second=(len(finished) - 1) / span if span > 0 else 0.0,
                latency_ms=1000 * float(np.median(latencies)) if latencies else 0.0,
                latency_p95_ms=1000 * float(np.percentile(latencies, 95)) if latencies else 0.0,
                label=self._label,
                probability=self._probability,
                error=self._error,
            )


class ConnectionWatch:
    """Tells, from the stream states a page sees over time, whether the stream connected.

    The page calls `observe` on every run with the streamer's state. Where
    the browser and the server cannot reach each other (no TURN server
    between two networks, a firewall), the stream stays "signalling" and
    never connects, or the browser gives up and the stream stops before it
    connected: both are "failed".

    Args:
        connect_seconds: How long a stream may take to connect.
    """

    def __init__(self, connect_seconds=CONNECT_SECONDS):
        self.connect_seconds = connect_seconds
        self._started_at = None
        self._connected = False
        self._failed = False

    def observe(self, active, connected, now):
        """Returns "idle", "connecting", "live" or "failed".

        Args:
            active: Whether the streamer is signalling or playing.
            connected: Whether the stream has connected: the streamer is
                playing, or the server has processed a frame of it.
            now: Seconds (monotonic).
        """
        if not active:
            if self._started_at is not None and not self._connected:
                # Stopped before it connected: the browser gave up, unless the user stopped at once.
                self._failed = now - self._started_at >= GIVE_UP_SECONDS
            self._started_at = None
            return "failed" if self._failed else "idle"
        if self._started_at is None:
            self._started_at, self._connected, self._failed = now, False, False
        if connected:
            self._connected = True
        if self._connected:
            return "live"
        if now - self._started_at > self.connect_seconds:
            return "failed"
        return "connecting"
