"""A recorded "camera" for the Live page's bench and browser test: the sample photos, panned and zoomed.

    python tools/camera_clip.py clip.y4m [--seconds 4] [--fps 15]

`panning_frames` makes the frames (a slow zoom and pan over each sample
photo in turn, like a hand-held camera moving over an object);
`write_video` encodes them with PyAV (e.g. `.mp4`, H.264) and `read_video`
decodes them back, so the bench feeds decoded camera frames; `write_y4m`
writes the raw YUV4MPEG2 file that chromium's fake camera plays
(`--use-file-for-fake-video-capture=clip.y4m`).
"""

import argparse
import sys
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_SIZE = (480, 640)  # (height, width), a webcam's VGA
DEFAULT_FPS = 15
DEFAULT_PHOTOS = ("chelsea", "coffee", "rocket", "astronaut")


def panning_frames(seconds=4.0, fps=DEFAULT_FPS, size=DEFAULT_SIZE, photos=DEFAULT_PHOTOS):
    """Frames of a camera moving over the sample photos, one photo after another.

    On each photo the view zooms from the whole photo to 70% of it while
    drifting from its top left to its bottom right, so every frame differs
    from the last and the object stays in view.

    Args:
        seconds: Length of the clip.
        fps: Frames per second.
        size: (height, width) of the frames.
        photos: Names of sample photos.

    Returns:
        A list of RGB uint8 arrays of shape (height, width, 3).
    """
    from convviz_core.inputs.samples import sample_image

    height, width = size
    count = max(1, round(seconds * fps))
    per_photo = -(-count // len(photos))
    frames = []
    for index in range(count):
        photo = sample_image(photos[min(index // per_photo, len(photos) - 1)])
        progress = (index % per_photo) / max(1, per_photo - 1)
        photo_height, photo_width = photo.shape[:2]
        # The largest window of the frame's shape that fits the photo, shrinking to 70%.
        scale = min(photo_height / height, photo_width / width) * (1.0 - 0.3 * progress)
        window_height, window_width = height * scale, width * scale
        top = progress * (photo_height - window_height)
        left = progress * (photo_width - window_width)
        window = photo[int(top) : int(top + window_height), int(left) : int(left + window_width)]
        frames.append(cv2.resize(window, (width, height), interpolation=cv2.INTER_AREA))
    return frames


def write_y4m(frames, path, fps=DEFAULT_FPS):
    """Writes RGB frames as a YUV4MPEG2 (4:2:0) file, the format chromium's fake camera reads."""
    height, width = frames[0].shape[:2]
    with open(path, "wb") as output:
        output.write(f"YUV4MPEG2 W{width} H{height} F{int(fps)}:1 Ip A1:1 C420jpeg\n".encode("ascii"))
        for frame in frames:
            output.write(b"FRAME\n")
            output.write(cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).tobytes())
    return Path(path)


def write_video(frames, path, fps=DEFAULT_FPS, codec="libx264"):
    """Encodes RGB frames into a video file with PyAV, as a camera recording would be."""
    import av

    height, width = frames[0].shape[:2]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=int(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path)


def read_video(path):
    """Decodes a video file into RGB uint8 frames with PyAV."""
    import av

    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="output file: .y4m for chromium's fake camera, else a video PyAV encodes")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--fps", type=int, default=DEFAULT_FPS)
    arguments = parser.parse_args()
    frames = panning_frames(arguments.seconds, arguments.fps)
    if arguments.path.endswith(".y4m"):
        write_y4m(frames, arguments.path, arguments.fps)
    else:
        write_video(frames, arguments.path, arguments.fps)
    print(f"{arguments.path}: {len(frames)} frames of {frames[0].shape[1]}x{frames[0].shape[0]} at {arguments.fps} frames/s")


if __name__ == "__main__":
    main()
