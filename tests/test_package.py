"""The package's shape: a lazy `convviz_core`, and every public name where users find it."""

import subprocess
import sys
from pathlib import Path

import pytest

import convviz_core

ROOT = Path(__file__).resolve().parent.parent
# What `from convviz_core import ...` offered before the package was grouped by
# concern (the app, tools, notebooks and tests rely on it), and what was added since.
PUBLIC_NAMES = [
    "InputError", "VisionModel", "activation_grid", "activations", "available_models", "colorize",
    "dead_channels", "filter_patterns", "grad_cam", "load_image", "load_model", "load_uploaded_model",
    "overlay", "pattern_grid", "predict", "sample_images", "default_pattern_layer",
]
OLD_MODULES = [
    "images", "samples", "model", "efficientnet_lite", "torch_weights", "labels", "model_check",
    "geometry", "summary", "patterns", "atlas_cache", "gradcam",
]


def fresh_python(code):
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    return result.stdout.strip()


@pytest.mark.parametrize("module", ["convviz_core", "convviz_core.errors", "convviz_core.paths",
                                    "convviz_core.inputs.file_names"])
def test_light_modules_do_not_import_tensorflow(module):
    assert fresh_python(f"import sys, {module}; print('tensorflow' in sys.modules)") == "False"


@pytest.mark.parametrize("name", PUBLIC_NAMES)
def test_public_names_are_importable_from_the_package(name):
    assert name in convviz_core.__all__
    assert callable(getattr(convviz_core, name))


@pytest.mark.parametrize("name", OLD_MODULES)
def test_old_module_names_still_resolve(name):
    module = getattr(convviz_core, name)
    assert module.__name__.startswith("convviz_core.") and module.__name__ != f"convviz_core.{name}"


def test_activations_is_the_function_even_after_its_module_is_imported():
    import convviz_core.intermediate_activations as module

    assert convviz_core.activations is module.activations


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        convviz_core.nothing_here


def test_the_runtime_package_holds_no_test_only_code():
    assert not (ROOT / "convviz_core" / "synthetic.py").exists()
    assert (ROOT / "tools" / "synthetic.py").exists()
