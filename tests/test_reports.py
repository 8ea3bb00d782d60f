"""Tests for the batch explanations of `convviz_core.reports`: the one-image numbers, to 1e-6.

Every number of the batched path (maps, deletion/insertion curves, Average
Drop, the chance level, ROAD) is compared with the one-image function the
dashboard calls on the same image; a broken file becomes a row with the
loader's message.
"""

import numpy as np
import pytest

import convviz_core
from convviz_core import InputError
from convviz_core.cam.methods import class_activation_map
from convviz_core.metrics.average_drop import average_drop_increase
from convviz_core.metrics.deletion_insertion import deletion_insertion
from convviz_core.metrics.random_baseline import random_baseline
from convviz_core.metrics.road import road
from convviz_core.reports.batch import count_masked_inputs, explain_images
from convviz_core.reports.discovery import find_images

STEPS = 8
SEEDS = (0, 1)
FRACTIONS = (0.3,)


def assert_same_as_one_image_path(model, image, result, layer_name, with_chance, with_road):
    for method, scores in result.methods.items():
        expected_map = class_activation_map(model, image, method, layer_name=layer_name)
        np.testing.assert_allclose(scores.heatmap, expected_map, atol=1e-6)
        curves = deletion_insertion(model, image, expected_map, result.explained_class, layer_name, STEPS)
        np.testing.assert_allclose(scores.curves.deletion_curve, curves.deletion_curve, atol=1e-6)
        np.testing.assert_allclose(scores.curves.insertion_curve, curves.insertion_curve, atol=1e-6)
        assert scores.curves.deletion_auc == pytest.approx(curves.deletion_auc, abs=1e-6)
        assert scores.curves.insertion_auc == pytest.approx(curves.insertion_auc, abs=1e-6)
        drop = average_drop_increase(model, image, expected_map, result.explained_class, layer_name)
        assert scores.average_drop.average_drop == pytest.approx(drop.average_drop, abs=1e-4)
        assert scores.average_drop.probability == pytest.approx(drop.probability, abs=1e-6)
        if with_road:
            expected_road = road(model, image, expected_map, result.explained_class, layer_name, FRACTIONS)
            np.testing.assert_allclose(
                scores.road.most_relevant_first_curve, expected_road.most_relevant_first_curve, atol=1e-6
            )
            np.testing.assert_allclose(
                scores.road.least_relevant_first_curve, expected_road.least_relevant_first_curve, atol=1e-6
            )
    if with_chance:
        shape = next(iter(result.methods.values())).heatmap.shape
        chance = random_baseline(model, image, shape, result.explained_class, layer_name, SEEDS, STEPS)
        assert result.chance.deletion_auc == pytest.approx(chance.deletion_auc, abs=1e-6)
        assert result.chance.insertion_auc == pytest.approx(chance.insertion_auc, abs=1e-6)
        assert result.chance.insertion_auc_spread == pytest.approx(chance.insertion_auc_spread, abs=1e-6)
        assert result.chance.average_drop == pytest.approx(chance.average_drop, abs=1e-4)


@pytest.fixture(scope="module")
def small_convnet():
    return convviz_core.load_model("small-convnet")


def disc(centre, radius, colour, size=150):
    rows, columns = np.mgrid[:size, :size]
    image = np.zeros((size, size, 3), np.uint8)
    image[(rows - centre[0]) ** 2 + (columns - centre[1]) ** 2 < radius**2] = colour
    return image


def test_small_convnet_batch_equals_the_one_image_path(small_convnet, tmp_path):
    images = [disc((60, 80), 30, (230, 200, 40)), disc((100, 50), 25, (40, 120, 250))]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    sources = [images[0], broken, images[1]]
    scored = []
    results = list(explain_images(
        small_convnet, sources, names=["a", "broken", "b"], methods=["grad-cam", "eigen-cam"],
        steps=STEPS, chance_seeds=SEEDS, road_fractions=FRACTIONS, images_per_pool=2, batch_size=7,
        progress=scored.append,
    ))
    assert [result.name for result in results] == ["a", "broken", "b"]
    assert results[1].error is not None and "image" in results[1].error and results[1].methods == {}
    assert sum(scored) == 2 * count_masked_inputs(["grad-cam", "eigen-cam"], STEPS, SEEDS, FRACTIONS)
    for image, result in zip(images, [results[0], results[2]]):
        assert result.error is None
        assert_same_as_one_image_path(
            small_convnet, image, result, small_convnet.default_cam_layer(), with_chance=True, with_road=True
        )


def test_efficientnet_lite0_batch_equals_the_one_image_path():
    model = convviz_core.load_model("efficientnet-lite0")
    photos = convviz_core.sample_images()
    images = [photos["chelsea"], photos["coffee"]]
    results = list(explain_images(model, images, methods=["grad-cam", "layer-cam"], steps=STEPS, chance_seeds=()))
    assert results[0].predicted_class == 285 and results[0].explained_class == 285
    for image, result in zip(images, results):
        assert result.chance is None
        assert_same_as_one_image_path(
            model, image, result, model.default_cam_layer(), with_chance=False, with_road=False
        )


def test_a_class_asked_for_is_explained_in_every_image(small_convnet):
    (result,) = explain_images(small_convnet, [disc((60, 80), 30, (230, 200, 40))], class_index=1, steps=2,
                               chance_seeds=())
    assert result.explained_class == 1 and result.methods["grad-cam"].curves.class_index == 1


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"methods": ["nope"]}, "There is no CAM method 'nope'"),
        ({"class_index": 7}, "Class 7 does not exist"),
    ],
)
def test_bad_settings_are_refused_before_any_work(small_convnet, arguments, message):
    with pytest.raises(InputError, match=message):
        list(explain_images(small_convnet, [disc((60, 80), 30, (230, 200, 40))], **arguments))


def test_find_images_walks_folders_and_refuses_missing_paths(tmp_path):
    (tmp_path / "inner" / ".hidden").mkdir(parents=True)
    for name in ["b.JPG", "a.png", "notes.txt", "inner/c.webp", "inner/.hidden/d.png", ".e.png"]:
        (tmp_path / name).write_bytes(b"x")
    assert [path.relative_to(tmp_path).as_posix() for path in find_images([tmp_path])] == [
        "a.png", "b.JPG", "inner/c.webp"
    ]
    assert find_images([tmp_path / "notes.txt", tmp_path / "a.png", tmp_path])[:2] == [
        tmp_path / "notes.txt", tmp_path / "a.png"
    ]
    with pytest.raises(InputError, match="There is no file or folder at '.*missing'. Check the path."):
        find_images([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="No image files were found"):
        find_images([tmp_path / "empty"])


def zip_bytes(files, compression=0):
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_images_from_zip_skips_what_is_not_an_image_and_bounds_every_size(monkeypatch):
    import io
    import zipfile

    from convviz_core.reports import archive

    files = {"a.png": b"1", "dir/b.JPG": b"22", "notes.txt": b"x", "__MACOSX/._a.png": b"y", ".c.png": b"z"}
    assert archive.images_from_zip(io.BytesIO(zip_bytes(files))) == [("a.png", b"1"), ("dir/b.JPG", b"22")]
    # A member whose header lies about its size is still read through a bounded stream.
    monkeypatch.setattr(archive, "MAX_FILE_BYTES", 4)
    bomb = zip_bytes({"big.png": b"\0" * 10_000, "ok.png": b"1"}, zipfile.ZIP_DEFLATED)
    (big, error), ok = archive.images_from_zip(io.BytesIO(bomb))
    assert big == "big.png" and isinstance(error, InputError) and "larger than" in str(error)
    assert ok == ("ok.png", b"1")
    monkeypatch.setattr(archive, "MAX_ARCHIVE_BYTES", 3)
    with pytest.raises(InputError, match="add up to more than"):
        archive.images_from_zip(io.BytesIO(zip_bytes({"a.png": b"12", "b.png": b"34"})))
    monkeypatch.setattr(archive, "MAX_ARCHIVE_IMAGES", 1)
    with pytest.raises(InputError, match="more than 1 images"):
        archive.images_from_zip(io.BytesIO(zip_bytes({"a.png": b"", "b.png": b""})))
    with pytest.raises(InputError, match="This file is not a ZIP archive"):
        archive.images_from_zip(io.BytesIO(b"PK nope"))
    with pytest.raises(InputError, match="holds no image files"):
        archive.images_from_zip(io.BytesIO(zip_bytes({"notes.txt": b"x"})))


def test_leaderboard_and_table_order(small_convnet):
    from convviz_core.reports.summary import image_table, leaderboard, parse_labels

    images = [disc((60, 80), 30, (230, 200, 40)), disc((100, 50), 25, (40, 120, 250))]
    results = list(explain_images(small_convnet, images, names=["a", "b"], methods=["grad-cam", "eigen-cam"],
                                  steps=2, chance_seeds=(0,)))
    board = leaderboard(results)
    assert [row["method"] for row in board] == ["grad-cam", "eigen-cam"]
    deletions = [result.methods["grad-cam"].curves.deletion_auc for result in results]
    assert board[0]["deletion_auc"] == pytest.approx(np.mean(deletions))
    assert board[0]["deletion_auc_spread"] == pytest.approx(np.std(deletions))
    assert board[0]["road_combined"] is None and board[0]["images"] == 2
    labels = parse_labels(b"image,label\na,cross\nb,0\n", small_convnet)
    assert labels == {"a": 1, "b": 0}
    assert [row["image"] for row in image_table(results, small_convnet, labels)][0] == "a"
    with pytest.raises(InputError, match="Line 2 of the labels CSV names the class 'dog'"):
        parse_labels(b"image,label\na,dog\n", small_convnet)
