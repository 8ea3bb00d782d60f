"""The Dataset page in a real browser: a ZIP of 200 photos, the leaderboard, a screenshot.

Makes 200 JPEG variations of the sample photos (bench_batch.make_images),
starts the app (tests/test_e2e_browser.streamlit_server), opens the Dataset
page in Debian's headless chromium, uploads the ZIP, presses "Explain the
set", waits for the leaderboard, prints the time it took and saves a
screenshot of the whole page.

    python bench/bench_dataset_browser.py [--images 200] [--model small-convnet] [--out docs/screenshots/dataset.png]

The model is the sidebar's choice (EfficientNet-Lite0 is the default; the
book's small convnet keeps the run short on a shared machine).
"""

import argparse
import io
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_batch import make_images  # noqa: E402
from test_e2e_browser import chromium_page, screenshot_whole_page, streamlit_server, wait_for_app_idle  # noqa: E402

MODEL_TITLES = {"small-convnet": "small convnet", "efficientnet-lite0": "EfficientNet-Lite0"}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--model", default="small-convnet", choices=sorted(MODEL_TITLES))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots" / "dataset.png")
    parser.add_argument("--timeout", type=float, default=3600)
    arguments = parser.parse_args()

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="convviz-dataset-browser-") as folder:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for path in make_images(folder, arguments.images):
                archive.write(path, f"photos/{path.name}")
        zip_path = Path(folder, "photos.zip")
        zip_path.write_bytes(buffer.getvalue())
        print(f"ZIP of {arguments.images} photos: {zip_path.stat().st_size / 2**20:.1f} MB", flush=True)
        with streamlit_server(Path(folder, "server.log")) as base_url, sync_playwright() as playwright:
            with chromium_page(playwright) as page:
                page.goto(f"{base_url}/dataset")
                wait_for_app_idle(page)
                if arguments.model != "efficientnet-lite0":
                    page.get_by_test_id("stSidebar").locator('[data-testid="stSelectbox"]').first.click()
                    page.get_by_role("option").filter(has_text=MODEL_TITLES[arguments.model]).first.click()
                    wait_for_app_idle(page)
                # The sidebar has an image uploader too: take the page's first one.
                main = page.get_by_test_id("stMain")
                main.locator('[data-testid="stFileUploader"] input[type="file"]').first.set_input_files(str(zip_path))
                wait_for_app_idle(page)
                started = time.perf_counter()
                page.get_by_role("button", name="Explain the set").click()
                try:
                    page.get_by_role("heading", name="Leaderboard").wait_for(timeout=arguments.timeout * 1000)
                except Exception:
                    screenshot_whole_page(page, arguments.out.with_suffix(".failed.png"))
                    raise
                wait_for_app_idle(page, arguments.timeout)
                seconds = time.perf_counter() - started
                caption = main.get_by_text("images explained at layer").first.inner_text()
                print(f"{caption} Leaderboard shown {seconds:.0f} s after the click.", flush=True)
                arguments.out.parent.mkdir(parents=True, exist_ok=True)
                screenshot_whole_page(page, arguments.out)
                print(f"screenshot: {arguments.out}")


if __name__ == "__main__":
    main()
