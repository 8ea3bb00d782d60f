"""Live: the camera, streamed, through one layer: its strongest channels and the Grad-CAM of the top class.

The browser sends its camera to the server over WebRTC (streamlit-webrtc,
aiortc); each newest frame goes through one compiled pass
(`convviz_core.live.analyze_frame`) and comes back as a picture: the
Grad-CAM overlay of the top class beside the layer's strongest channels.
Frames that arrive while one is being processed are dropped, so the picture
stays live. Where WebRTC cannot connect, the page says so and sends the user
to the snapshot camera in the sidebar.
"""

import time

import streamlit as st

from convviz_app.live_stream import (
    MEDIA_STREAM_CONSTRAINTS,
    ConnectionWatch,
    LiveProcessor,
    LiveSettings,
    LiveStats,
    import_streamlit_webrtc,
    rtc_configuration,
)
from convviz_app.address import Address, cam_layer, overlay_strength
from convviz_app.router import hand_over_to_app
from convviz_app.sidebar import current_selection, page_intro, require_model
from convviz_core import InputError
from convviz_core.live import analyze_frame

hand_over_to_app()

SNAPSHOT_HINT = (
    "You can still use your camera: in the sidebar, under **Image**, turn on **Camera** and take a "
    "photo; every page then shows what the network sees in it."
)
STREAM_KEY = "live_stream"
WATCH_KEY = "live_connection_watch"

selection = current_selection()
page_intro(
    "Live: the network watching your camera",
    "Point your camera at something. Each frame goes through the network as it arrives: on the left, the "
    "Grad-CAM heatmap of the class it sees (red where the image speaks for that class most), and on the "
    "right the channels of the chosen layer that respond most to what is in front of the camera right now. "
    "Move the object and watch both follow. Frames that arrive while the network is busy are skipped, so "
    "the picture never falls behind.",
    selection,
)
model = require_model(selection)

try:
    webrtc = import_streamlit_webrtc()
except ImportError as error:
    st.warning(f"The live camera stream is not available on this server ({error.name or error} is not installed). {SNAPSHOT_HINT}")
    st.stop()

try:
    model.check_class(0)
    model.default_cam_layer()  # A model without a convolution layer is refused here.
except InputError as error:
    st.error(f"The live view needs a model that names classes. {error}")
    st.stop()

address = Address("live", ("layer", "alpha"))
layer_column, alpha_column = st.columns([3, 2])
layer = cam_layer(
    address, layer_column.selectbox, model, f"live_layer:{selection.model_key}",
    help="Both the channels and the heatmap come from this layer. The last convolution (the default) is "
    "coarse but the most class-specific; early layers show edges and colours.",
)
alpha = overlay_strength(address, alpha_column.slider, "live_alpha")
settings = LiveSettings(model=model, layer_name=layer, alpha=alpha)
# The layer's pass is compiled on its first frame, which takes seconds; streamlit-webrtc
# stops a stream whose frame takes over 10 s, so compile it here, before the stream needs it.
with st.spinner(f"Preparing {layer}…"):
    analyze_frame(model, selection.image, layer)

try:
    configuration = rtc_configuration()
except InputError as error:
    st.error(f"{error} Until then the stream connects without an ICE server.")
    configuration = {"iceServers": []}

video_column, status_column = st.columns([3, 2])
try:
    with video_column:
        context = webrtc.webrtc_streamer(
            key=STREAM_KEY,
            mode=webrtc.WebRtcMode.SENDRECV,
            rtc_configuration=configuration,
            media_stream_constraints=MEDIA_STREAM_CONSTRAINTS,
            video_processor_factory=lambda: LiveProcessor(settings),
            async_processing=True,
            video_html_attrs={
                "autoPlay": True, "controls": False, "muted": True, "playsInline": True, "style": {"width": "100%"},
            },
            translations={"start": "Start the camera", "stop": "Stop"},
        )
except Exception as error:  # noqa: BLE001  (Streamlit's reruns are BaseExceptions and pass)
    # The component needs Streamlit's full server (a session, a WebSocket); where it cannot
    # run, say so instead of a traceback.
    st.warning(f"The live camera stream cannot run here ({type(error).__name__}: {error}). {SNAPSHOT_HINT}")
    st.stop()
if context.video_processor is not None:
    context.video_processor.update(settings)

watch = st.session_state.setdefault(WATCH_KEY, ConnectionWatch())
active = context.state.playing or context.state.signalling


@st.fragment(run_every=1.0 if active else None)
def show_status():
    """The stream's state, refreshed every second while it runs."""
    processor = context.video_processor
    stats = processor.stats() if processor is not None else LiveStats()
    playing = context.state.playing
    state = watch.observe(playing or context.state.signalling, playing or stats.frames > 0, time.monotonic())
    if state == "live" and stats.frames == 0:
        st.info("Connected: the first frame is being computed…")
    elif state == "live":
        st.subheader(f"{stats.label} · {stats.probability:.0%}", anchor=False)
        st.markdown(
            f"{stats.frames} frames shown · {stats.frames_per_second:.1f} frames/s · "
            f"{stats.latency_ms:.0f} ms per frame (p95 {stats.latency_p95_ms:.0f} ms) · "
            f"{stats.dropped} dropped to stay live",
            help="Frames shown: pictures the server computed and sent back. Per frame: from the frame's "
            "arrival on the server to its picture (median and 95th percentile of the last 30). Dropped: "
            "frames that arrived while the previous one was being computed.",
        )
    elif state == "connecting":
        st.info("Connecting the camera to the server…")
    elif state == "failed":
        st.warning(
            "The live stream could not connect: your browser and this server cannot reach each other directly "
            "(a server behind another network needs a TURN server, which the person running ConvViz can set with "
            f"CONVVIZ_ICE_SERVERS). {SNAPSHOT_HINT}"
        )
    else:
        st.caption(
            "Press **Start the camera** and allow the browser to use it. Browsers allow the camera only on "
            "https:// addresses and on localhost. The frames go to this server and are not kept."
        )
    if stats.error:
        st.error(stats.error)


with status_column:
    show_status()
    st.caption(f"No live stream? {SNAPSHOT_HINT}")
