"""The classroom bench's protocol client (`bench/streamlit_client.py`) against a real `streamlit run app.py`.

The client speaks Streamlit's private websocket protocol, so an upgrade of
streamlit can break it; these tests say so at once. One client opens the
app as a new visitor does: the default page's first picture arrives (and its
file is served), and the navigation lists the app's pages. Then it uploads a
photo through the upload handshake (file_urls_request, the XSRF-checked PUT,
the uploader's widget state) and is shown that photo back, and it follows a
link to another page.
"""

import asyncio
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import bench_classroom  # noqa: E402
from streamlit_client import MAIN, SIDEBAR, StreamlitClient  # noqa: E402

# The titles of app.py's `st.navigation`, in its order.
PAGE_TITLES = ["Lesson", "Activations", "Filters", "One unit", "Grad-CAM", "Compare", "Live", "Dataset", "Model"]
# A fresh server loads EfficientNet-Lite0 on the first visit.
TIMEOUT = 120
RED, BLUE = (220, 30, 30), (30, 30, 220)


@pytest.fixture(scope="module")
def base_url():
    with tempfile.TemporaryDirectory(prefix="convviz-client-test-") as folder:
        folder = Path(folder)
        with bench_classroom.streamlit_server(folder / "streamlit.log", folder / "cache") as (url, _):
            yield url


def decode(data):
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def test_a_new_visitor_gets_the_default_page_and_the_page_list(base_url):
    async def visit():
        async with StreamlitClient(base_url) as client:
            await client.run()
            pictures = await client.wait_until(lambda: client.pictures(MAIN), TIMEOUT)
            return client, pictures, await client.picture_bytes(pictures[0].url)

    client, pictures, data = asyncio.run(visit())

    assert list(client.pages) == PAGE_TITLES
    assert client.page_script_hash == client.pages["Activations"].page_script_hash
    assert client.pages["Grad-CAM"].url_pathname == "grad-cam"
    assert pictures[0].caption.startswith("All ") and pictures[0].current
    assert pictures[0].url.startswith("/media/")
    assert decode(data).shape[0] > 16
    assert client.errors() == []


def test_an_uploaded_photo_is_shown_back_and_a_link_opens_another_page(base_url, tmp_path):
    # Left half red, right half blue: the sidebar's preview must show both, on their sides.
    photo = np.zeros((120, 160, 3), np.uint8)
    photo[:, :80], photo[:, 80:] = RED, BLUE
    path = tmp_path / "two-colours.png"
    cv2.imwrite(str(path), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))

    async def visit():
        async with StreamlitClient(base_url) as client:
            await client.run()
            await client.wait_until(lambda: client.pictures(MAIN), TIMEOUT)
            uploader = client.widget("file_uploader", "upload a photo", SIDEBAR)
            await client.upload_file(uploader, path, "image/png")
            await client.wait_until(
                lambda: any("Image: two-colours.png" in text for text in client.texts(MAIN))
                and any(picture.caption.startswith("All ") for picture in client.pictures(MAIN)),
                TIMEOUT,
            )
            preview = next(picture for picture in client.pictures(SIDEBAR)
                           if picture.caption.startswith("What the model sees"))
            preview_data = await client.picture_bytes(preview.url)
            await client.open_page("Model")
            await client.wait_until(lambda: client.finished_runs and not client.running and not client.run_requested,
                                    TIMEOUT)
            return client, preview_data, client.texts(MAIN)

    client, preview_data, model_page = asyncio.run(visit())

    preview = decode(preview_data).astype(float)
    width = preview.shape[1]
    np.testing.assert_allclose(preview[:, : width // 3].mean(axis=(0, 1)), RED, atol=25)
    np.testing.assert_allclose(preview[:, -width // 3:].mean(axis=(0, 1)), BLUE, atol=25)
    assert client.page_script_hash == client.pages["Model"].page_script_hash
    # The Model page names the uploaded photo too: the uploader's state went with the page change.
    assert any("two-colours.png" in text for text in model_page), model_page
    assert client.errors() == []
