"""The report folder: report.csv, maps (.npy), overlays (PNG) and manifest.json.

The `convviz explain` command and the Dataset page write the same files:

    report.csv              one row per image x method (a refused image: one row with its error)
    maps/<image>__<method>.npy      the map at the layer's resolution (`class_activation_map`'s)
    overlays/<image>__<method>.png  the book's overlay on the photo
    manifest.json           versions, the model's SHA-256, every setting, the CPU flags
"""

import csv
import hashlib
import io
import json
import os
import platform
import re
import sys
import zipfile
from pathlib import Path

import numpy as np

from convviz_core.overlays import overlay

REPORT_COLUMNS = (
    "image", "method", "predicted_class", "predicted_label", "probability", "explained_class",
    "explained_label", "explained_probability", "deletion_auc", "insertion_auc", "average_drop",
    "increase_in_confidence", "chance_deletion_auc", "chance_deletion_spread", "chance_insertion_auc",
    "chance_insertion_spread", "chance_average_drop", "beats_chance_deletion", "beats_chance_insertion",
    "road_most_relevant_first", "road_least_relevant_first", "road_combined", "map_file", "overlay_file",
    "map_seconds", "image_seconds", "error",
)
CONVVIZ_VERSION = "0.1.0"


def file_stem(index, name):
    """A file name for an image's outputs: its place in the run and its name, made safe."""
    safe = re.sub(r"[^\w.+-]", "_", str(name).replace("\\", "/").replace("/", "__"), flags=re.ASCII)
    return f"{index:05d}-{safe[-80:]}"


def _number(value, digits=9):
    return "" if value is None else round(float(value), digits)


def report_rows(model, explanation, stem=None):
    """The report.csv rows of one `ImageExplanation`: one per method, or one with its error."""
    if explanation.error is not None:
        return [{"image": explanation.name, "error": explanation.error}]
    probabilities = explanation.probabilities
    predicted, explained = explanation.predicted_class, explanation.explained_class
    chance = explanation.chance
    rows = []
    for method, scores in explanation.methods.items():
        road = scores.road
        row = {
            "image": explanation.name,
            "method": method,
            "predicted_class": predicted,
            "predicted_label": model.class_label(predicted),
            "probability": _number(probabilities[predicted]),
            "explained_class": explained,
            "explained_label": model.class_label(explained),
            "explained_probability": _number(probabilities[explained]),
            "deletion_auc": _number(scores.curves.deletion_auc),
            "insertion_auc": _number(scores.curves.insertion_auc),
            "average_drop": _number(scores.average_drop.average_drop),
            "increase_in_confidence": scores.average_drop.increase_in_confidence,
            "road_most_relevant_first": _number(road and road.most_relevant_first),
            "road_least_relevant_first": _number(road and road.least_relevant_first),
            "road_combined": _number(road and road.combined),
            "map_seconds": _number(explanation.map_seconds, 4),
            "image_seconds": _number(explanation.seconds, 4),
            "error": "",
        }
        if chance is not None:
            row.update({
                "chance_deletion_auc": _number(chance.deletion_auc),
                "chance_deletion_spread": _number(chance.deletion_auc_spread),
                "chance_insertion_auc": _number(chance.insertion_auc),
                "chance_insertion_spread": _number(chance.insertion_auc_spread),
                "chance_average_drop": _number(chance.average_drop),
                "beats_chance_deletion": scores.beats_chance[0],
                "beats_chance_insertion": scores.beats_chance[1],
            })
        if stem is not None:
            row["map_file"] = f"maps/{stem}__{method}.npy"
            row["overlay_file"] = f"overlays/{stem}__{method}.png"
        rows.append(row)
    return rows


def write_image_files(folder, model, explanation, stem, layer_name, alpha=0.4):
    """Writes an image's maps (.npy) and overlays (PNG) under `folder`."""
    from PIL import Image

    folder = Path(folder)
    (folder / "maps").mkdir(parents=True, exist_ok=True)
    (folder / "overlays").mkdir(parents=True, exist_ok=True)
    for method, scores in explanation.methods.items():
        np.save(folder / "maps" / f"{stem}__{method}.npy", scores.heatmap)
        picture = overlay(explanation.image, model.heatmap_on_input(layer_name, scores.heatmap), alpha)
        Image.fromarray(picture).save(folder / "overlays" / f"{stem}__{method}.png")


def write_csv(path, rows, columns=REPORT_COLUMNS):
    """Writes rows (dicts) as CSV with the given columns; a missing value is empty."""
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def file_sha256(path):
    """The SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cpu_flags():
    """The CPU's model name and flags (Linux's /proc/cpuinfo), for reproducing a run."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"processor": platform.processor(), "flags": []}
    fields = {}
    for line in text.splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            fields.setdefault(key.strip(), value)
    return {
        "processor": fields.get("model name", "").strip(),
        "flags": sorted(fields.get("flags", "").split()),
        "cores": os.cpu_count(),
    }


def manifest(command, settings, model_name, model_file=None):
    """What a run needs to be reproduced: versions, the model's SHA-256, the settings, the CPU.

    Args:
        command: The sub-command or view, e.g. "explain".
        settings: dict of every setting (JSON-serialisable).
        model_name: The built-in name or the model file's path.
        model_file: The model file read (a built-in model's weights file,
            or the user's), for its SHA-256; None for none.

    Returns:
        A JSON-serialisable dict.
    """
    import keras
    import tensorflow as tf

    return {
        "convviz": CONVVIZ_VERSION,
        "command": command,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "model": str(model_name),
        "model_file": None if model_file is None else str(model_file),
        "model_sha256": None if model_file is None else file_sha256(model_file),
        "settings": settings,
        "environment": {
            name: os.environ[name]
            for name in ("CONVVIZ_PRECISION", "TF_ENABLE_ONEDNN_OPTS", "OMP_NUM_THREADS")
            if name in os.environ
        },
        "cpu": cpu_flags(),
    }


def write_manifest(folder, manifest_dict):
    """Writes manifest.json into `folder`."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    with open(Path(folder) / "manifest.json", "w", encoding="utf-8") as file:
        json.dump(manifest_dict, file, indent=2, sort_keys=True)
        file.write("\n")


def zip_folder(folder):
    """The files of a report folder as the bytes of a ZIP (for a download)."""
    buffer = io.BytesIO()
    folder = Path(folder)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def explain_to_folder(model, sources, names, folder, layer_name, on_image=None, alpha=0.4, write_images=True,
                      **options):
    """Explains images (`batch.explain_images`) and writes the report folder as it goes.

    Args:
        model: A `VisionModel`.
        sources, names: As `explain_images` takes them.
        folder: The report folder (created).
        layer_name: The layer explained.
        on_image: Optional function called with each `ImageExplanation`
            once its files are written (its `image` may then be dropped).
        alpha: Overlay strength.
        write_images: Whether to write maps and overlays (else report.csv only).
        **options: The other arguments of `explain_images` (methods,
            class_index, steps, chance_seeds, road_fractions, progress,
            prepare_image, ...).

    Returns:
        (rows of report.csv, number of images refused).
    """
    from convviz_core.reports.batch import explain_images

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows, failed = [], 0
    for index, explanation in enumerate(explain_images(model, sources, names, layer_name=layer_name, **options)):
        stem = None
        if explanation.error is None and write_images:
            stem = file_stem(index, explanation.name)
            write_image_files(folder, model, explanation, stem, layer_name, alpha)
        failed += explanation.error is not None
        rows.extend(report_rows(model, explanation, stem))
        if on_image is not None:
            on_image(explanation)
    write_csv(folder / "report.csv", rows)
    return rows, failed
