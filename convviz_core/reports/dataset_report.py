"""The Dataset page's job: a set of images explained, its report ZIP, and the small pictures the page shows.

The page runs `explain_dataset` in the app's job pool, or a queue's worker
runs it (`convviz_core.remote_jobs.dataset_report`) for a replica: the same
function either way, so the report is the same.
"""

import base64
import shutil
import tempfile

from convviz_core.cam.methods import class_activation_map
from convviz_core.inputs.images import fit_within, resize_to
from convviz_core.inputs.pictures import png_bytes
from convviz_core.overlays import overlay
from convviz_core.reports.batch import count_masked_inputs
from convviz_core.reports.files import (
    explain_to_folder,
    manifest,
    write_manifest,
    zip_folder,
)

STEPS = 32
THUMBNAIL_SIDE = 96
CONFUSIONS_SHOWN = 12
CONFUSION_SIDE = 480


def thumbnail_url(image, side=THUMBNAIL_SIDE):
    """A small PNG of an image as a data URL, for the page's picture column."""
    scale = side / max(image.shape[:2])
    small = resize_to(image, (max(1, round(image.shape[0] * scale)), max(1, round(image.shape[1] * scale))))
    return "data:image/png;base64," + base64.b64encode(png_bytes(small)).decode("ascii")


def explain_dataset(model, layer_name, sources, names, methods, chance_seeds, road_fractions, labels, progress):
    """Explains every image, writes the report folder and ZIPs it; keeps only small pictures.

    Args:
        model: A `VisionModel` (not changed).
        layer_name: The layer of the maps.
        sources: Image paths or bytes, as `explain_to_folder` takes them.
        names: Their names in the report.
        methods: CAM method names.
        chance_seeds: Seeds of the random maps (empty: no chance level).
        road_fractions: ROAD's fractions, or None for no ROAD.
        labels: {image name: true class index} (may be empty).
        progress: Function (done, total) in masked inputs; raises when the job is cancelled.

    Returns:
        (explanations, ZIP bytes): the `ImageExplanation`s without their
        images, each with `thumbnail` and `overlay` data URLs and, for the
        first misclassified labelled images, `confusion` (the Grad-CAM
        overlays of the true and the predicted class).
    """
    total = len(sources) * count_masked_inputs(methods, STEPS, chance_seeds, road_fractions)
    done = [0]

    def report(count):
        done[0] += count
        progress(done[0], total)

    kept, confusions = [], [0]

    def on_image(explanation):
        if explanation.error is None:
            image = explanation.image
            scores = explanation.methods.get("grad-cam") or next(iter(explanation.methods.values()))
            placed = model.heatmap_on_input(layer_name, scores.heatmap)
            explanation.thumbnail = thumbnail_url(image)
            explanation.overlay = thumbnail_url(overlay(image, placed))
            true = labels.get(explanation.name)
            if true is not None and true != explanation.predicted_class and confusions[0] < CONFUSIONS_SHOWN:
                confusions[0] += 1
                true_map = class_activation_map(model, image, "grad-cam", class_index=true, layer_name=layer_name)
                explanation.confusion = (
                    fit_within(overlay(image, model.heatmap_on_input(layer_name, true_map)), CONFUSION_SIDE),
                    fit_within(overlay(image, placed), CONFUSION_SIDE),
                )
            # The report's files are written: only the small pictures stay in memory.
            explanation.image = None
        kept.append(explanation)

    folder = tempfile.mkdtemp(prefix="convviz-dataset-")
    try:
        settings = {"images": len(sources), "layer": layer_name, "methods": list(methods), "class": "top",
                    "steps": STEPS, "chance_seeds": list(chance_seeds), "road": road_fractions is not None,
                    "road_fractions": None if road_fractions is None else list(road_fractions),
                    "image_max_side": 1024}
        explain_to_folder(
            model, sources, names, folder, layer_name, on_image, methods=list(methods), steps=STEPS,
            chance_seeds=chance_seeds, road_fractions=road_fractions, progress=report, prepare_image=fit_within,
        )
        write_manifest(folder, manifest("dataset", settings, model.name))
        archive = zip_folder(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return kept, archive
