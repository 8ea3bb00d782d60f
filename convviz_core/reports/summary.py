"""The dataset view's numbers: the method leaderboard, the image table, labels and confusions."""

import csv
import io

import numpy as np

from convviz_core.errors import InputError


def leaderboard(explanations):
    """Each method's scores over a set of images: mean, spread and how often it beats chance.

    Args:
        explanations: `ImageExplanation`s (those with an error are skipped).

    Returns:
        A list of dicts, one per method in the order first seen: method,
        images, deletion_auc / insertion_auc / average_drop / road_combined
        means and their standard deviations (`..._spread`; ROAD's None
        without ROAD), and beats_chance (fraction of images where the map
        beats chance on both curves), beats_chance_deletion,
        beats_chance_insertion (None without a chance level).
    """
    scores = {}
    for explanation in explanations:
        if explanation.error is None:
            for method, result in explanation.methods.items():
                scores.setdefault(method, []).append(result)
    rows = []
    for method, results in scores.items():
        row = {"method": method, "images": len(results)}
        columns = {
            "deletion_auc": [result.curves.deletion_auc for result in results],
            "insertion_auc": [result.curves.insertion_auc for result in results],
            "average_drop": [result.average_drop.average_drop for result in results],
            "road_combined": [result.road.combined for result in results if result.road is not None],
        }
        for name, values in columns.items():
            row[name] = float(np.mean(values)) if values else None
            row[f"{name}_spread"] = float(np.std(values)) if values else None
        verdicts = [result.beats_chance for result in results if result.beats_chance is not None]
        row["beats_chance"] = float(np.mean([all(verdict) for verdict in verdicts])) if verdicts else None
        row["beats_chance_deletion"] = float(np.mean([verdict[0] for verdict in verdicts])) if verdicts else None
        row["beats_chance_insertion"] = float(np.mean([verdict[1] for verdict in verdicts])) if verdicts else None
        rows.append(row)
    return rows


def parse_labels(data, model):
    """Reads a labels CSV: a column "image" (a name in the set) and "label" (a class index or name).

    Args:
        data: The CSV's bytes (UTF-8).
        model: The `VisionModel`, for its class names.

    Returns:
        dict image name -> class index.

    Raises:
        InputError: If the CSV lacks the columns or names a class the model does not have.
    """
    try:
        text = bytes(data).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError("The labels file is not UTF-8 text. Save it as a UTF-8 CSV.") from None
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or not {"image", "label"} <= {name.strip() for name in reader.fieldnames}:
        raise InputError('The labels CSV needs a header with the columns "image" and "label".')
    names = {name: index for index, name in enumerate(model.class_names or [])}
    labels = {}
    for line, row in enumerate(reader, start=2):
        row = {key.strip(): (value or "").strip() for key, value in row.items() if key}
        label = row["label"]
        if label.isdigit() and int(label) < (model.class_count or 0):
            labels[row["image"]] = int(label)
        elif label in names:
            labels[row["image"]] = names[label]
        else:
            raise InputError(
                f"Line {line} of the labels CSV names the class '{label[:60]}', which '{model.name}' does not "
                "have. Use a class index or one of the model's class names."
            )
    return labels


def image_table(explanations, model, labels=None, method="grad-cam"):
    """One row per image, misclassified first, then the worst explained by `method` first.

    "Worst explained" is the lowest insertion minus deletion area of the
    method's map (a faithful map has a high insertion and a low deletion area).

    Args:
        explanations: `ImageExplanation`s.
        model: The `VisionModel`, for class names.
        labels: Optional dict image name -> true class.
        method: The method that orders the table (the first one run, if absent).

    Returns:
        A list of dicts: image, predicted, probability, true (or None),
        misclassified (or None), faithfulness (insertion - deletion), deletion_auc,
        insertion_auc, error, and the explanation itself under "explanation".
    """
    labels = labels or {}
    rows = []
    for explanation in explanations:
        row = {"image": explanation.name, "explanation": explanation, "error": explanation.error}
        if explanation.error is None:
            scores = explanation.methods.get(method) or next(iter(explanation.methods.values()))
            true = labels.get(explanation.name)
            row.update({
                "predicted": model.class_label(explanation.predicted_class),
                "probability": float(explanation.probabilities[explanation.predicted_class]),
                "true": None if true is None else model.class_label(true),
                "misclassified": None if true is None else true != explanation.predicted_class,
                "deletion_auc": scores.curves.deletion_auc,
                "insertion_auc": scores.curves.insertion_auc,
                "faithfulness": scores.curves.insertion_auc - scores.curves.deletion_auc,
            })
        rows.append(row)
    rows.sort(key=lambda row: (
        row["error"] is not None,
        not row.get("misclassified"),
        row.get("faithfulness", 0.0),
    ))
    return rows
