"""The `convviz` command line: explain, patterns, activations, serve.

Exit codes: 0 when the run worked (an image the loader refused is a row of
report.csv, not a failure, unless every image was refused), 2 for a usage
error (argparse's), 1 for a failure (a model that cannot be loaded safely, no
images, a layer that does not exist, ...). Errors are one line on stderr:
"convviz: error: <what to do>".
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

# TensorFlow's start-up notices would drown the progress bar; set before it is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
# The dashboard `convviz serve` starts: found next to the packages in a checkout (or an editable install).
DASHBOARD_APP = Path(__file__).resolve().parent.parent / "app.py"
# Read by the dashboard's sidebar (`convviz_app.sidebar.SERVE_MODEL_VARIABLE`).
SERVE_MODEL_VARIABLE = "CONVVIZ_SERVE_MODEL"
SERVE_PREPROCESS_VARIABLE = "CONVVIZ_SERVE_PREPROCESS"


class Failure(Exception):
    """A failure the user can act on: printed as one line, exit code 1."""


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of at least 0, got {value}")
    return value


def _class_choice(text):
    if text == "top":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'top' or a class index, got '{text}'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 'top' or a class index of at least 0, got {value}")
    return value


def _method_list(text):
    from convviz_core.cam.methods import CAM_METHODS, FAST_METHODS

    if text == "all":
        return list(CAM_METHODS)
    if text == "fast":
        return list(FAST_METHODS)
    methods = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in methods if name not in CAM_METHODS]
    if unknown or not methods:
        raise argparse.ArgumentTypeError(
            f"unknown method '{unknown[0] if unknown else text}'; choose from {', '.join(CAM_METHODS)}, "
            "or 'all' or 'fast'"
        )
    return methods


def _filter_range(text):
    indices = []
    try:
        for part in text.split(","):
            if "-" in part:
                first, last = (int(value) for value in part.split("-", 1))
                indices.extend(range(first, last + 1))
            else:
                indices.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected filters such as '0-63' or '0,5,9', got '{text}'") from None
    if not indices or min(indices) < 0:
        raise argparse.ArgumentTypeError(f"expected filters such as '0-63' or '0,5,9', got '{text}'")
    return indices


def build_parser():
    """The argument parser of `convviz` and its four sub-commands."""
    parser = argparse.ArgumentParser(
        prog="convviz",
        description="See what a convnet learned: CAM explanations of a folder of images with a report, "
        "filter patterns, activation grids, or the ConvViz dashboard.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    model_help = (
        "a built-in model (efficientnet-lite0, small-convnet, ...) or a .keras / .h5 file; a file is "
        "checked as an upload is (a limited child process, Keras's safe mode)"
    )

    explain = commands.add_parser(
        "explain",
        help="CAM maps, overlays and faithfulness scores of images, with report.csv",
        description="Explains each image with CAM methods and scores each map (deletion/insertion, "
        "Average Drop, chance baselines, optionally ROAD). Writes report.csv, maps/*.npy, overlays/*.png "
        "and manifest.json to --out.",
    )
    explain.add_argument("model", metavar="MODEL", help=model_help)
    explain.add_argument("images", metavar="IMAGES", nargs="+", help="image files or folders (searched recursively)")
    explain.add_argument("--layer", help="the layer to explain (default: the last convolution)")
    explain.add_argument("--methods", type=_method_list, default=["grad-cam"],
                         help="comma-separated CAM methods, or 'all' (seven, with Score-CAM) or 'fast' (default: grad-cam)")
    explain.add_argument("--class", dest="class_index", type=_class_choice, default=None,
                         help="'top' (each image's top class; the default) or a class index")
    explain.add_argument("--out", required=True, type=Path, help="the report folder (created)")
    explain.add_argument("--steps", type=_positive_int, default=32, help="steps per deletion/insertion curve (default 32)")
    explain.add_argument("--chance-maps", type=_positive_int, default=3,
                         help="random maps per image for the chance level (default 3; 0 for none)")
    explain.add_argument("--road", action="store_true",
                         help="add ROAD (Rong et al. 2022; about 7 s per map on 224x224: one sparse solve per step)")
    explain.add_argument("--alpha", type=float, default=0.4, help="overlay strength (default 0.4)")
    explain.add_argument("--no-files", action="store_true", help="write report.csv and manifest.json only")
    _model_options(explain)

    patterns = commands.add_parser(
        "patterns", help="filter patterns of a layer: the atlas and each pattern as PNG",
        description="Finds the pattern each filter responds to most and writes atlas.png, "
        "patterns/filter_NNNN.png and manifest.json to --out.",
    )
    patterns.add_argument("model", metavar="MODEL", help=model_help)
    patterns.add_argument("--layer", help="the layer (default: the Filters page's)")
    patterns.add_argument("--filters", type=_filter_range, default=list(range(64)), help="e.g. 0-63 (default) or 0,5,9")
    patterns.add_argument("--method", choices=("gradient-ascent", "fourier"), default="gradient-ascent")
    patterns.add_argument("--steps", type=_positive_int, default=None, help="optimisation steps (default: the method's)")
    patterns.add_argument("--seed", type=_positive_int, default=0)
    patterns.add_argument("--out", required=True, type=Path, help="the output folder (created)")
    _model_options(patterns)

    activations = commands.add_parser(
        "activations", help="every channel of chosen layers for one image, as grids",
        description="Writes one grid per layer (activations/<layer>.png, viridis, the book's figure) and "
        "manifest.json to --out.",
    )
    activations.add_argument("model", metavar="MODEL", help=model_help)
    activations.add_argument("image", metavar="IMAGE", type=Path, help="an image file")
    activations.add_argument("--layers", help="comma-separated layers (default: the first eight non-linear ones)")
    activations.add_argument("--out", required=True, type=Path, help="the output folder (created)")
    _model_options(activations)

    serve = commands.add_parser(
        "serve", help="start the dashboard, opened on a model",
        description="Starts the ConvViz dashboard (streamlit run app.py). With a model file, the file is "
        "checked as an upload is, and the sidebar opens on it.",
    )
    serve.add_argument("model", metavar="MODEL", nargs="?", help=model_help + " (default: efficientnet-lite0)")
    serve.add_argument("--port", type=_positive_int, default=8501)
    serve.add_argument("--preprocess", default="divide by 255", help="for a model file: its preprocessing preset")
    return parser


def _model_options(parser):
    parser.add_argument("--preprocess", default="divide by 255",
                        help="for a model file: its preprocessing preset (default 'divide by 255')")
    parser.add_argument("--input-size", type=_positive_int, default=None,
                        help="for a model file that accepts any size: the side of its square input")


def load_command_model(name, preprocess="divide by 255", input_size=None):
    """Loads MODEL: a built-in name, or a file checked exactly as an upload is.

    Returns:
        (VisionModel, the file whose SHA-256 identifies the weights, or None).
    """
    from convviz_core.models.registry import (
        BUILTIN_MODELS,
        PREPROCESS_PRESETS,
        load_model,
        load_uploaded_model,
    )

    if name in BUILTIN_MODELS:
        return load_model(name), _builtin_file(name)
    path = Path(name)
    if path.suffix.lower() not in (".keras", ".h5"):
        raise Failure(
            f"'{name}' is neither a built-in model ({', '.join(BUILTIN_MODELS)}) nor a .keras / .h5 file."
        )
    if not path.is_file():
        raise Failure(f"There is no model file at '{path}'.")
    if preprocess not in PREPROCESS_PRESETS:
        raise Failure(f"Unknown preprocessing '{preprocess}'. Choose one of: {', '.join(PREPROCESS_PRESETS)}.")
    size = None if input_size is None else (input_size, input_size)
    model = load_uploaded_model(path.read_bytes(), path.name, preprocess=preprocess, input_size=size)
    return model, path


def _builtin_file(name):
    if name == "efficientnet-lite0":
        from convviz_core.models.efficientnet_lite import (
            efficientnet_lite0_weights_path,
        )

        return efficientnet_lite0_weights_path()
    if name == "small-convnet":
        from convviz_core.models.registry import _data_path

        return _data_path("small_convnet.keras")
    return None


def _progress_bar(total, unit):
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, file=sys.stderr, dynamic_ncols=True)


def run_explain(arguments):
    from convviz_core.inputs.images import fit_within
    from convviz_core.metrics.road import DEFAULT_FRACTIONS
    from convviz_core.reports.discovery import find_images
    from convviz_core.reports.files import explain_to_folder, manifest, write_manifest

    paths = find_images(arguments.images)
    model, model_file = load_command_model(arguments.model, arguments.preprocess, arguments.input_size)
    layer = arguments.layer or model.default_cam_layer()
    if layer not in model.layer_names:
        raise Failure(f"The model '{model.name}' has no layer '{layer}'. Its layers: {', '.join(model.layer_names)}.")
    if arguments.class_index is not None:
        model.check_class(arguments.class_index)
    names = [_relative_name(path, arguments.images) for path in paths]
    settings = {
        "images": [str(path) for path in arguments.images], "image_count": len(paths), "layer": layer,
        "methods": arguments.methods, "class": "top" if arguments.class_index is None else arguments.class_index,
        "steps": arguments.steps, "chance_maps": arguments.chance_maps, "chance_seeds": list(range(arguments.chance_maps)),
        "road": arguments.road, "road_fractions": list(DEFAULT_FRACTIONS) if arguments.road else None,
        "alpha": arguments.alpha, "preprocess": arguments.preprocess, "input_size": arguments.input_size,
        "model_input_size": list(model.input_size),
        "image_max_side": 1024,
    }
    out = arguments.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with _progress_bar(len(paths), "image") as bar:

        def on_image(explanation):
            if explanation.error:
                bar.write(f"convviz: skipped {explanation.name}: {explanation.error}", file=sys.stderr)
            bar.update(1)

        _, failed = explain_to_folder(
            model, paths, names, out, layer, on_image, arguments.alpha, not arguments.no_files,
            methods=arguments.methods, class_index=arguments.class_index, steps=arguments.steps,
            chance_seeds=tuple(range(arguments.chance_maps)),
            road_fractions=DEFAULT_FRACTIONS if arguments.road else None, prepare_image=fit_within,
        )
    settings["seconds"] = round(time.perf_counter() - started, 3)
    write_manifest(out, manifest("explain", settings, arguments.model, model_file))
    print(f"{len(paths) - failed} of {len(paths)} images explained; report: {out / 'report.csv'}")
    if failed == len(paths):
        raise Failure("No image could be read; report.csv lists why.")


def _relative_name(path, roots):
    for root in map(Path, roots):
        if root.is_dir():
            try:
                return path.relative_to(root).as_posix()
            except ValueError:
                continue
    return path.name


def run_patterns(arguments):
    from PIL import Image

    from convviz_core.features.patterns import (
        default_pattern_layer,
        filter_patterns,
        pattern_grid,
    )
    from convviz_core.reports.files import manifest, write_manifest

    model, model_file = load_command_model(arguments.model, arguments.preprocess, arguments.input_size)
    layer = arguments.layer or default_pattern_layer(model)
    if layer not in model.layer_names:
        raise Failure(f"The model '{model.name}' has no layer '{layer}'. Its layers: {', '.join(model.layer_names)}.")
    out = arguments.out
    (out / "patterns").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with _progress_bar(None, "step") as bar:

        def progress(done, total):
            bar.total = total
            bar.n = done
            bar.refresh()

        patterns = filter_patterns(
            model, layer, arguments.filters, steps=arguments.steps, seed=arguments.seed,
            progress=progress, method=arguments.method,
        )
    Image.fromarray(pattern_grid(patterns)).save(out / "atlas.png")
    for index, pattern in zip(arguments.filters, patterns):
        Image.fromarray(pattern).save(out / "patterns" / f"filter_{index:04d}.png")
    settings = {"layer": layer, "filters": arguments.filters, "method": arguments.method, "steps": arguments.steps,
                "seed": arguments.seed, "preprocess": arguments.preprocess, "input_size": arguments.input_size,
                "seconds": round(time.perf_counter() - started, 3)}
    write_manifest(out, manifest("patterns", settings, arguments.model, model_file))
    print(f"{len(patterns)} patterns of {layer}: {out / 'atlas.png'}")


def run_activations(arguments):
    from PIL import Image

    from convviz_app.figures import viridis
    from convviz_core.inputs.images import load_image
    from convviz_core.intermediate_activations import (
        activation_grid,
        activations,
        overview_layers,
    )
    from convviz_core.reports.files import file_stem, manifest, write_manifest

    image = load_image(arguments.image)
    model, model_file = load_command_model(arguments.model, arguments.preprocess, arguments.input_size)
    layers = [name.strip() for name in arguments.layers.split(",")] if arguments.layers else overview_layers(model)
    unknown = [name for name in layers if name not in model.layer_names]
    if unknown:
        raise Failure(f"The model '{model.name}' has no layer '{unknown[0]}'. Its layers: {', '.join(model.layer_names)}.")
    out = arguments.out
    (out / "activations").mkdir(parents=True, exist_ok=True)
    with _progress_bar(len(layers), "layer") as bar:
        values = activations(model, image, layers)
        for index, layer in enumerate(layers):
            Image.fromarray(viridis(activation_grid(values[layer]))).save(
                out / "activations" / f"{file_stem(index, layer)}.png"
            )
            bar.update(1)
    settings = {"image": str(arguments.image), "layers": layers, "preprocess": arguments.preprocess,
                "input_size": arguments.input_size}
    write_manifest(out, manifest("activations", settings, arguments.model, model_file))
    print(f"{len(layers)} activation grids: {out / 'activations'}")


def run_serve(arguments):
    app = DASHBOARD_APP
    if not app.is_file():
        # A wheel (`pip install .`) holds the packages only: app.py and pages/ stay in the checkout by design.
        raise Failure(
            f"convviz serve needs the source checkout: the dashboard (app.py and pages/) is not part of an "
            f"installed package, and {app} does not exist. In a clone of ConvViz, install it with "
            "`pip install --no-deps -e .` (after `pip install -r requirements.txt`) and run convviz serve again."
        )
    environment = dict(os.environ)
    if arguments.model:
        from convviz_core.models.registry import BUILTIN_MODELS, PREPROCESS_PRESETS

        if arguments.model not in BUILTIN_MODELS:
            path = Path(arguments.model).resolve()
            if path.suffix.lower() not in (".keras", ".h5") or not path.is_file():
                raise Failure(f"There is no .keras / .h5 model file at '{arguments.model}'.")
            if arguments.preprocess not in PREPROCESS_PRESETS:
                raise Failure(
                    f"Unknown preprocessing '{arguments.preprocess}'. Choose one of: {', '.join(PREPROCESS_PRESETS)}."
                )
            from convviz_core.safety.model_check import check_model_file

            # Fail here, before a server starts, for a file the upload check refuses.
            check_model_file(path, name=path.stem)
            environment[SERVE_MODEL_VARIABLE] = str(path)
            environment[SERVE_PREPROCESS_VARIABLE] = arguments.preprocess
        else:
            environment[SERVE_MODEL_VARIABLE] = arguments.model
    command = [sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(arguments.port)]
    return subprocess.call(command, env=environment, cwd=str(app.parent))


COMMANDS = {"explain": run_explain, "patterns": run_patterns, "activations": run_activations, "serve": run_serve}


def main(argv=None):
    """Runs `convviz`; returns the exit code."""
    arguments = build_parser().parse_args(argv)
    from convviz_core.errors import InputError

    try:
        code = COMMANDS[arguments.command](arguments)
    except (Failure, InputError) as error:
        print(f"convviz: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("convviz: interrupted", file=sys.stderr)
        return 130
    return EXIT_OK if code is None else code


def console_main():
    """The `convviz` console script."""
    sys.exit(main())
