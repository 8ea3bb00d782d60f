"""`VisionModel`: a Keras model with what the three views need to know of it."""

import hashlib
import inspect
import threading
import types
import uuid

import keras
import numpy as np
import tensorflow as tf

from convviz_core.errors import InputError
from convviz_core.graph.geometry import heatmap_peak, layer_geometry, upsample_heatmap
from convviz_core.graph.plan import GraphPlan, can_strip_activation, head_activation
from convviz_core.inputs.images import check_rgb_image, resize_to

# Spatial size used for models that accept any input size (a base without its top).
DEFAULT_INPUT_SIZE = (224, 224)

_POOLING_TYPES = (
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
)


def identity_preprocess(images):
    """The preprocessing of a model that takes raw 0-255 pixels (the default)."""
    return images


class VisionModel:
    """Wraps a Keras image model with what the views need.

    A `VisionModel` is shared by every user of a server: nothing in ConvViz
    changes the Keras model it wraps. Compiled functions built for it (one per
    view and layer) are cached on the instance, so build one `VisionModel` per
    loaded model and reuse it.

    Args:
        keras_model: A built Keras Functional or Sequential model with one image
            input (batch, height, width, channels). Nested models are fine.
        preprocess: Function mapping a float32 batch of RGB pixels in [0, 255]
            at the model's input size to the model's input. It must be written
            with TensorFlow / keras.ops so gradients flow through it (filter
            patterns are optimised in pixel space). Default: identity.
        name: Display name. Default: the Keras model's name.
        class_names: Names of the output classes, or None.
        input_size: (height, width) for a model that accepts any size; ignored
            when the model fixes its own. Default: 224x224.

    Raises:
        InputError: If the model is not an image model ConvViz can trace.
    """

    def __init__(self, keras_model, preprocess=None, name=None, class_names=None, input_size=None):
        self.keras_model = keras_model
        self.name = name or keras_model.name
        self._preprocess = preprocess or identity_preprocess
        self._preprocess_key = None
        self._plan = GraphPlan(keras_model)
        input_shape = tuple(keras_model.inputs[0].shape)
        if len(input_shape) != 4 or input_shape[-1] not in (1, 3):
            raise InputError(
                f"The model '{self.name}' takes inputs of shape {input_shape[1:]}; ConvViz "
                "needs an image input of shape (height, width, 3) or (height, width, 1)."
            )
        height, width, self.input_channels = input_shape[1:]
        self.has_fixed_input_size = height is not None and width is not None
        if self.has_fixed_input_size:
            self.input_size = (height, width)
        else:
            self.input_size = tuple(int(side) for side in (input_size or DEFAULT_INPUT_SIZE))
            if len(self.input_size) != 2 or min(self.input_size) < 8 or max(self.input_size) > 1024:
                raise InputError(
                    f"input_size must be (height, width) between 8 and 1024 pixels. "
                    f"Received: input_size={input_size}"
                )
        self._layer_infos = [
            info
            for info in self._plan.layer_infos()
            if len(info.output_shape) == 4 and not isinstance(info.layer, keras.layers.InputLayer)
        ]
        self.layer_names = [info.path for info in self._layer_infos]
        final = self._plan.final_call()
        output_shape = tuple(keras_model.outputs[0].shape)
        self.output_units = output_shape[-1] if len(output_shape) == 2 else None
        # The activation that ends the model, and whether Grad-CAM's pre-activation
        # scores (graph.pre_activation) are logits: they are unless the activation
        # sits in a layer that cannot be recomputed without it.
        self.head = head_activation(final.layer) if final is not None else "none"
        self.scores_are_logits = self.head == "none" or can_strip_activation(final.layer)
        self.is_binary = self.output_units == 1 and self.head in ("sigmoid", "none")
        if class_names is not None:
            class_names = [str(name) for name in class_names]
            if len(class_names) != self.class_count:
                raise InputError(
                    f"{len(class_names)} class names were given, but the model '{self.name}' "
                    f"has {self.class_count} classes. Give one name per class."
                )
        self.class_names = class_names
        self._functions = {}
        self._lock = threading.RLock()

    @property
    def plan(self):
        """The `GraphPlan` that reaches every (nested) layer of the model."""
        return self._plan

    @property
    def preprocess_key(self):
        """A stable name of the model's preprocessing, for cache keys (atlases depend on it).

        The registry sets it for its presets ("preset:caffe"). Otherwise a
        plain function is named by its module, qualified name and a digest of
        its source, which is the same in every process; a function whose
        behaviour its source does not fix (a closure, defaults, a callable
        object, a function without source) gets a name unique to this
        `VisionModel`, so its results are never shared with another model.
        """
        if self._preprocess_key is None:
            function = self._preprocess
            source = None
            if isinstance(function, types.FunctionType) and not (
                function.__closure__ or function.__defaults__ or function.__kwdefaults__
            ):
                try:
                    source = inspect.getsource(function)
                except (OSError, TypeError):
                    source = None
            if source is None:
                self._preprocess_key = f"unique:{uuid.uuid4().hex}"
            else:
                digest = hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]
                self._preprocess_key = f"{function.__module__}.{function.__qualname__}:{digest}"
        return self._preprocess_key

    @preprocess_key.setter
    def preprocess_key(self, key):
        self._preprocess_key = str(key)

    @property
    def class_count(self):
        """The number of classes (2 for a single sigmoid output), or None."""
        if self.output_units is None:
            return None
        if self.is_binary:
            return 2
        return self.output_units

    def probabilities(self, scores):
        """Turns the scores of `graph.pre_activation` into class probabilities.

        Args:
            scores: float tensor (batch, units).

        Returns:
            float tensor (batch, classes); a single sigmoid output gives two
            columns, (1 - p, p).
        """
        if self.scores_are_logits:
            if self.head == "sigmoid" or self.is_binary:
                scores = tf.sigmoid(scores)
            else:
                scores = tf.nn.softmax(scores, axis=-1)
        if self.is_binary:
            scores = tf.concat([1 - scores, scores], axis=-1)
        return scores

    def class_score(self, scores, class_index):
        """The score that Grad-CAM explains for one class, per batch row.

        For a single sigmoid output, class 1 is the logit and class 0 the
        negated logit (or 1 - p where only the probability is known).

        Args:
            scores: float tensor (batch, units) from `graph.pre_activation`.
            class_index: int32 scalar tensor.
        """
        if self.is_binary:
            positive = scores[:, 0]
            negative = -positive if self.scores_are_logits else 1 - positive
            return tf.where(class_index == 1, positive, negative)
        return tf.gather(scores, class_index, axis=-1)

    def check_class(self, class_index):
        """Validates a class index.

        Raises:
            InputError: If the model has no classes or the index is out of range.
        """
        if self.class_count is None:
            raise InputError(
                f"The model '{self.name}' does not output class scores (its output has shape "
                f"{tuple(self.keras_model.outputs[0].shape)}), so there is no class to explain."
            )
        if not 0 <= int(class_index) < self.class_count:
            raise InputError(
                f"Class {class_index} does not exist: '{self.name}' has classes 0 to "
                f"{self.class_count - 1}. Pick a class in that range."
            )

    def class_label(self, class_index):
        """Returns the display name of a class."""
        if self.class_names is not None:
            return self.class_names[class_index]
        return f"class {class_index}"

    def class_index_of(self, text):
        """The class a text names: its index ("282") or its name ("tiger_cat", "Tiger cat").

        Names match without regard to case, spaces or underscores.

        Raises:
            ValueError: No class of this model has that index or name.
        """
        text = str(text).strip()
        if self.class_count is None:
            raise ValueError(f"The model '{self.name}' has no classes. Received: {text!r}")
        if text.isdigit():
            index = int(text)
            if index < self.class_count:
                return index
            raise ValueError(f"The model '{self.name}' has classes 0 to {self.class_count - 1}. Received: {text!r}")
        wanted = _class_name_key(text)
        for index in range(self.class_count):
            if _class_name_key(self.class_label(index)) == wanted:
                return index
        raise ValueError(f"The model '{self.name}' has no class named {text!r}.")

    def preprocess(self, images):
        """Maps a batch of RGB pixels at the input size to the model's input.

        Args:
            images: uint8 or float batch (n, height, width, 3) of 0-255 RGB
                pixels, numpy or tensor.

        Returns:
            A float tensor ready for the model (differentiable).
        """
        images = tf.cast(images, tf.float32)
        inputs = self._preprocess(images)
        if self.input_channels == 1:
            # A grayscale model sees the luminance of the RGB image.
            inputs = tf.reduce_sum(inputs * tf.constant([0.299, 0.587, 0.114]), -1, keepdims=True)
        return inputs

    def prepare(self, image):
        """Validates one RGB image and resizes it to the model's input size.

        Args:
            image: RGB uint8 array (height, width, 3) of any size.

        Returns:
            A uint8 batch of one (1, input height, input width, 3).

        Raises:
            InputError: If `image` is not an RGB uint8 array.
        """
        return resize_to(check_rgb_image(image), self.input_size)[np.newaxis]

    def layer_info(self, layer_name):
        """Returns the `LayerInfo` of a layer with a 4-D output.

        Raises:
            InputError: If there is no such layer, or its output is not 4-D.
        """
        for info in self._layer_infos:
            if info.path == layer_name:
                return info
        if layer_name in self._plan.layers:
            shape = self._plan.layers[layer_name][0].output_shape
            reason = f"its output has shape {shape}, not (batch, height, width, channels)"
        else:
            reason = "there is no layer of that name"
        raise InputError(
            f"Cannot show layer '{layer_name}' of '{self.name}': {reason}. "
            f"Choose one of: {', '.join(self.layer_names) or '(none)'}."
        )

    def heatmap_on_input(self, layer_name, heatmap):
        """Lays a map of a layer's resolution over the model input, aligned.

        Each pixel of the map is placed where its layer pixel looks on the
        input (see `geometry`): unpadded convolutions and poolings shift a
        feature map, so a plain resize would misplace a Grad-CAM peak by up to
        half a receptive field. Resize the result to the image like the image
        itself was resized (`overlay` does).

        Args:
            layer_name: The layer the map comes from.
            heatmap: float array (layer height, layer width).

        Returns:
            float32 array at `self.input_size`.
        """
        return upsample_heatmap(heatmap, self._geometry(layer_name), self.input_size)

    def heatmap_peak(self, layer_name, heatmap):
        """Where on the model input the highest pixel of a layer's map looked.

        The pixel the Grad-CAM "pointing game" scores: the centre of the
        map's highest pixel, placed like `heatmap_on_input` places it.

        Args:
            layer_name: The layer the map comes from.
            heatmap: float array (layer height, layer width).

        Returns:
            (row, column) in model-input pixels as floats, or None when the
            map has no positive value.
        """
        return heatmap_peak(heatmap, self._geometry(layer_name), self.input_size)

    def input_box(self, layer_name, row, column):
        """The part of the model input that one pixel of a layer looks at.

        Args:
            layer_name: A layer from `layer_names`.
            row, column: A pixel of that layer's output.

        Returns:
            (top, left, bottom, right) in model-input pixels, bottom and right
            exclusive, clipped to the input: the pixel's receptive field along
            each layer's first input. Where the geometry is unknown (an
            upsampling on the way), the pixel's share of a plain resize.
        """
        info = self.layer_info(layer_name)
        geometry = self._geometry(layer_name)
        box = []
        for axis, index in enumerate((row, column)):
            size = self.input_size[axis]
            if geometry is None:
                cells = info.output_shape[1 + axis] or 1
                start, end = index * size / cells, (index + 1) * size / cells
            else:
                centre = geometry[axis].offset + geometry[axis].stride * index
                half = geometry[axis].extent / 2
                start, end = centre - half + 0.5, centre + half + 0.5
            box.append((int(np.clip(np.floor(start), 0, size - 1)), int(np.clip(np.ceil(end), 1, size))))
        (top, bottom), (left, right) = box
        return top, left, bottom, right

    def _geometry(self, layer_name):
        """`layer_geometry` of a layer, worked out once; None for a plain resize."""
        self.layer_info(layer_name)
        geometry = self.cached_function(
            ("geometry", layer_name), lambda: layer_geometry(self._plan, layer_name) or "none"
        )
        return None if geometry == "none" else geometry

    def is_pooling(self, layer_name):
        """Whether a layer is a pooling layer."""
        return isinstance(self.layer_info(layer_name).layer, _POOLING_TYPES)

    def default_cam_layer(self):
        """The last layer with a 4-D output that is not a pooling layer.

        Raises:
            InputError: If the model has no such layer.
        """
        for name in reversed(self.layer_names):
            if not self.is_pooling(name):
                return name
        raise InputError(
            f"The model '{self.name}' has no layer with a spatial (height, width, channels) "
            "output, so there is nothing to visualise. Choose a convolutional model."
        )

    def cached_function(self, key, build):
        """Returns the function cached under `key`, building it once if needed.

        Several threads may ask for the same key at once; only one builds it.
        """
        with self._lock:
            function = self._functions.get(key)
            if function is None:
                function = build()
                self._functions[key] = function
            return function

    def __repr__(self):
        return f"VisionModel(name={self.name!r}, input_size={self.input_size})"


def _class_name_key(name):
    return " ".join(name.replace("_", " ").lower().split())
