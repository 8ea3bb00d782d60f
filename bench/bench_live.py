"""Benchmarks the Live page's per-frame work on a recorded clip, EfficientNet-Lite0 at 224.

    python bench/bench_live.py [--seconds 6] [--rounds 2] [--layer top_activation]

A clip is made offline in a temporary folder (`tools/camera_clip.py`: the
sample photos panned and zoomed, 640x480 at 15 frames/s, encoded to H.264
with PyAV) and decoded back, so the frames are what a camera stream gives.

(a) Back to back, every frame: the per-frame core function
    (`convviz_core.live.analyze_frame`: one compiled forward and backward
    pass, the strongest channels, the Grad-CAM overlay at the frame's size),
    then with the page's picture (`LiveProcessor.process`: + `live_picture`),
    and the VP8 encoding of that picture that aiortc does before sending it
    back (on the same CPU). Frames/s and latency p50/p95 per frame.
(b) Live: the clip played as a camera in real time (a frame every 1/15 s)
    into the page's `LiveProcessor`, which processes only the newest frame
    in its own thread and drops the frames that arrive meanwhile. Overlays
    per second, frame-to-overlay latency p50/p95 (from the frame's arrival to
    its picture) and frames dropped.

Targets on 2 cores: >= 5 Grad-CAM overlays per second, <= 300 ms from frame
to overlay. Both are run with `CONVVIZ_PRECISION` unset and `=float32`,
interleaved round by round (the live pass computes in float32 either way:
the variable chooses the precision of filter patterns only). The machine is
shared: the load average is printed with the figures.
"""

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402

from bench_core import cpu_flags  # noqa: E402
from convviz_app.live_stream import LiveProcessor, LiveSettings, import_streamlit_webrtc  # noqa: E402
from convviz_core import load_model  # noqa: E402
from convviz_core.live import analyze_frame  # noqa: E402
from tools.camera_clip import DEFAULT_FPS, panning_frames, read_video, write_video  # noqa: E402

PRECISIONS = ("", "float32")


def percentiles(seconds):
    milliseconds = 1000 * np.asarray(seconds)
    return float(np.percentile(milliseconds, 50)), float(np.percentile(milliseconds, 95))


def back_to_back(model, layer, frames):
    """(a): every frame in turn; per-frame seconds of the core, of the page's picture, of VP8."""
    import av
    from aiortc.codecs.vpx import Vp8Encoder

    processor = LiveProcessor(LiveSettings(model, layer))
    encoder = Vp8Encoder()
    core, picture, encode = [], [], []
    for frame in frames:
        start = time.perf_counter()
        analyze_frame(model, frame, layer)
        core.append(time.perf_counter() - start)
        start = time.perf_counter()
        image = processor.process(frame)
        picture.append(time.perf_counter() - start)
        start = time.perf_counter()
        encoder.encode(av.VideoFrame.from_ndarray(image, format="rgb24"))
        encode.append(time.perf_counter() - start)
    return core, picture, encode


def as_a_camera(model, layer, frames, fps):
    """(b): the frames arrive in real time; the processor keeps only the newest."""
    import av

    processor = LiveProcessor(LiveSettings(model, layer), recent_frames=100_000)
    video_frames = [av.VideoFrame.from_ndarray(frame, format="rgb24") for frame in frames]

    async def play():
        start = time.perf_counter()
        for index, frame in enumerate(video_frames):
            delay = start + index / fps - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await processor.recv_queued([frame])
        return time.perf_counter() - start

    duration = asyncio.run(play())
    # Let the last frame handed over finish (at most one is pending).
    deadline = time.perf_counter() + 10
    while processor.stats().frames + processor.stats().dropped < len(frames) and time.perf_counter() < deadline:
        time.sleep(0.01)
    processor.on_ended()
    return processor.stats(), duration


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="length of the recorded clip")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each precision setting, interleaved")
    parser.add_argument("--layer", default=None, help="default: the model's default CAM layer")
    arguments = parser.parse_args()

    import_streamlit_webrtc()  # aiortc's codecs, loaded safely after TensorFlow
    print(f"CPU: {cpu_flags()}")
    print(f"Load average at start: {' '.join(f'{value:.1f}' for value in os.getloadavg())} (the machine is shared)")
    model = load_model("efficientnet-lite0")
    layer = arguments.layer or model.default_cam_layer()
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        path = write_video(panning_frames(arguments.seconds, DEFAULT_FPS), Path(folder) / "clip.mp4", DEFAULT_FPS)
        made = time.perf_counter() - start
        start = time.perf_counter()
        frames = read_video(path)
        decoded = time.perf_counter() - start
        size = path.stat().st_size
    height, width = frames[0].shape[:2]
    print(
        f"Clip: {len(frames)} frames of {width}x{height} at {DEFAULT_FPS} frames/s, H.264 by PyAV ({size / 1024:.0f} kB, "
        f"made in {made:.1f} s); decoding: {1000 * decoded / len(frames):.1f} ms per frame"
    )
    print(f"Model: EfficientNet-Lite0 at {model.input_size[0]}x{model.input_size[1]}; layer {layer}")
    analyze_frame(model, frames[0], layer)  # Compiles the layer's pass once.

    results = {precision: {"core": [], "picture": [], "encode": [], "live": []} for precision in PRECISIONS}
    for _ in range(arguments.rounds):
        for precision in PRECISIONS:
            os.environ["CONVVIZ_PRECISION"] = precision
            core, picture, encode = back_to_back(model, layer, frames)
            results[precision]["core"] += core
            results[precision]["picture"] += picture
            results[precision]["encode"] += encode
            results[precision]["live"].append(as_a_camera(model, layer, frames, DEFAULT_FPS))
    os.environ.pop("CONVVIZ_PRECISION", None)

    print("\n(a) Back to back, every frame (frames/s = 1 / mean time; p50 / p95 per frame)")
    print(f"{'CONVVIZ_PRECISION':<19}{'core: analyze_frame':>30}{'+ the page picture':>30}{'VP8 encoding':>20}")
    for precision in PRECISIONS:
        cells = []
        for name in ("core", "picture"):
            seconds = results[precision][name]
            p50, p95 = percentiles(seconds)
            cells.append(f"{1 / np.mean(seconds):5.1f}/s {p50:5.0f} / {p95:4.0f} ms")
        p50, p95 = percentiles(results[precision]["encode"])
        print(f"{precision or '(unset)':<19}{cells[0]:>30}{cells[1]:>30}{f'{p50:5.1f} / {p95:4.1f} ms':>20}")

    print(f"\n(b) As a camera at {DEFAULT_FPS} frames/s, newest frame only (per round)")
    print(f"{'CONVVIZ_PRECISION':<19}{'overlays/s':>12}{'frame to overlay p50 / p95':>30}{'dropped':>10}")
    verdicts = []
    for precision in PRECISIONS:
        for stats, duration in results[precision]["live"]:
            rate = stats.frames / duration
            print(
                f"{precision or '(unset)':<19}{rate:12.1f}{f'{stats.latency_ms:.0f} / {stats.latency_p95_ms:.0f} ms':>30}"
                f"{f'{stats.dropped}/{len(frames)}':>10}"
            )
            verdicts.append(rate >= 5 and stats.latency_p95_ms <= 300)
    print(f"\nLoad average at end: {' '.join(f'{value:.1f}' for value in os.getloadavg())}")
    print(
        "Targets (>= 5 overlays/s, <= 300 ms frame to overlay at p95): "
        f"met in {sum(verdicts)} of {len(verdicts)} camera runs"
    )


if __name__ == "__main__":
    main()
