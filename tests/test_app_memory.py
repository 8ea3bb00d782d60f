"""A session that looks at photo after photo keeps only the current one alive (see bench/bench_memory.py).

Streamlit keeps the metadata of every widget a session has ever shown,
including its `format_func`. Widgets whose key names the photo (the Grad-CAM
class picker, the Filters page's large filter) add one entry per photo, so a
`format_func` that closes over the page -- a lambda in the page script holds
the whole run: the photo, the overlay, the heatmap -- keeps every photo of the
session alive, about 1.5 MB per photo on the Grad-CAM page. This test counts
the sidebar's `Selection` objects (each holds its photo) left after photo
after photo on each page.
"""

import gc
from pathlib import Path

import cv2
import numpy as np
from streamlit.testing.v1 import AppTest

from convviz_app.sidebar import Selection

APP = Path(__file__).resolve().parent.parent / "app.py"
TIMEOUT = 240
PHOTOS = 6


def photo(seed):
    image = np.random.default_rng(seed).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    return cv2.imencode(".png", image)[1].tobytes()


def selections_alive():
    gc.collect()
    return sum(isinstance(item, Selection) for item in gc.get_objects())


def test_photo_after_photo_on_every_page_keeps_no_earlier_photo_alive():
    # Earlier tests may have left some alive (the memory cache keeps maps).
    already = selections_alive()
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.session_state["model_choice"] = "small-convnet"
    # A small atlas, so the Filters page computes in a moment.
    at.session_state["filters_params:builtin:small-convnet"] = {"layer": "conv2d_1", "first": 0, "count": 8, "size": 64, "steps": 2}
    at.run()
    for page in ("pages/activation-maps.py", "pages/grad-cam.py", "pages/filter-patterns.py"):
        at.switch_page(page)
        for seed in range(PHOTOS):
            at.file_uploader(key="image_file").set_value((f"photo-{seed}.png", photo(seed), "image/png")).run()
            assert not at.exception, [exception.value for exception in at.exception]
        # This run's selection, and the first run's if loading the model froze it.
        assert selections_alive() <= already + 2, (page, already, selections_alive())
