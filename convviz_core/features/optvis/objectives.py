"""What a pattern maximises: objectives on one layer's activations.

An objective maps the activations of the target layer, float32 (batch,
height, width, channels), and the filter index each image of the batch is
optimised for, int32 (batch,), to one value per image, float32 (batch,),
that the render loop maximises. Objectives compose like lucent's: `a + b`,
`a - b`, `2.0 * a`, `-a`.

Olah et al., "Feature Visualization", Distill 2017 (section "Optimization
Objectives" and "Diversity").
"""

import tensorflow as tf

# Keeps Gram normalisation finite for a dead (all-zero) layer.
EPSILON = 1e-8


class Objective:
    """A function of (activations, filter indices) with a name, composable with + - *.

    Args:
        function: Maps (activations (n, h, w, c), filter indices (n,)) to
            float32 (n,), one value per image, to be maximised.
        name: A short name, for cache keys and messages.
    """

    def __init__(self, function, name):
        self.function = function
        self.name = name

    def __call__(self, activations, filter_indices):
        return self.function(activations, filter_indices)

    def __add__(self, other):
        other = as_objective(other)
        return Objective(lambda a, f: self(a, f) + other(a, f), f"({self.name} + {other.name})")

    def __radd__(self, other):
        return self + other

    def __sub__(self, other):
        return self + (-as_objective(other))

    def __rsub__(self, other):
        return as_objective(other) - self

    def __neg__(self):
        return Objective(lambda a, f: -self(a, f), f"-{self.name}")

    def __mul__(self, factor):
        if isinstance(factor, Objective):
            return Objective(lambda a, f: self(a, f) * factor(a, f), f"{self.name} * {factor.name}")
        factor = float(factor)
        return Objective(lambda a, f: factor * self(a, f), f"{factor:g} * {self.name}")

    def __rmul__(self, factor):
        return self * factor

    def __repr__(self):
        return f"Objective({self.name})"


def as_objective(value):
    """An `Objective`, or a number made into a constant one."""
    if isinstance(value, Objective):
        return value
    constant = float(value)
    return Objective(lambda activations, _: tf.fill(tf.shape(activations)[:1], constant), f"{constant:g}")


def _chosen_channels(activations, filter_indices):
    """(n, h, w): each image's own channel."""
    return tf.gather(tf.cast(activations, tf.float32), filter_indices, axis=3, batch_dims=1)


def channel():
    """The mean over space of the image's channel: the book's loss (§5.4.2)."""
    return Objective(
        lambda activations, indices: tf.reduce_mean(_chosen_channels(activations, indices), axis=[1, 2]),
        "channel",
    )


def neuron():
    """The activation of the centre unit of the image's channel.

    The centre is (height // 2, width // 2) of the layer's output. One unit
    sees only its receptive field, so the pattern fills that part of the
    image and fades outside it.
    """

    def function(activations, indices):
        chosen = _chosen_channels(activations, indices)
        height, width = tf.shape(chosen)[1], tf.shape(chosen)[2]
        return chosen[:, height // 2, width // 2]

    return Objective(function, "neuron")


def gram_matrices(activations):
    """Each image's channel-by-channel Gram matrix, scaled to unit Frobenius norm.

    Args:
        activations: float tensor (n, h, w, c).

    Returns:
        float32 (n, c * c): the flattened Gram matrices, each of norm 1 (0
        for an all-zero activation).
    """
    activations = tf.cast(activations, tf.float32)
    shape = tf.shape(activations)
    flat = tf.reshape(activations, [shape[0], shape[1] * shape[2], shape[3]])
    grams = tf.reshape(tf.matmul(flat, flat, transpose_a=True), [shape[0], -1])
    return grams / (tf.norm(grams, axis=1, keepdims=True) + EPSILON)


def diversity():
    """Minus the mean cosine similarity of an image's Gram matrix to its siblings'.

    Siblings are the other images of the batch optimised for the same filter
    index. As in Lucid's `diversity`, the Gram matrix of the layer's
    activations (its "style", as in style transfer) is compared, and
    similarity is penalised, so the patterns of one filter show different
    things it responds to rather than the same pattern shifted. An image with
    no sibling gets 0.

    Returns:
        An `Objective`; higher values mean more diverse.
    """

    def function(activations, indices):
        grams = gram_matrices(activations)
        similarity = tf.matmul(grams, grams, transpose_b=True)
        same_filter = tf.equal(indices[:, tf.newaxis], indices[tf.newaxis, :])
        siblings = tf.cast(same_filter, tf.float32) * (1.0 - tf.eye(tf.shape(indices)[0]))
        count = tf.reduce_sum(siblings, axis=1)
        return -tf.reduce_sum(similarity * siblings, axis=1) / tf.maximum(count, 1.0)

    return Objective(function, "diversity")


def channel_with_diversity(weight=1.0):
    """The channel objective plus `weight` × `diversity`, on a scale that fits any layer.

    Activation scales differ by orders of magnitude between layers and
    models, while a cosine similarity lies in [-1, 1]. The diversity term is
    therefore multiplied by the batch's mean absolute channel objective (held
    constant for the gradient): `weight` = 1 trades the whole activation for
    a similarity of 1.

    Args:
        weight: How much diversity counts against activation.
    """
    base, spread = channel(), diversity()
    weight = float(weight)

    def function(activations, indices):
        values = base(activations, indices)
        scale = tf.stop_gradient(tf.reduce_mean(tf.abs(values))) + EPSILON
        return values + weight * scale * spread(activations, indices)

    return Objective(function, f"channel + {weight:g} * diversity")


OBJECTIVE_NAMES = ("channel", "neuron", "diversity")


def objective_named(name, diversity_weight=1.0):
    """The objective a name stands for in `render_patterns`.

    Args:
        name: "channel", "neuron" or "diversity" (the channel objective with
            the diversity term between images of the same filter).
        diversity_weight: See `channel_with_diversity`.

    Raises:
        ValueError: For an unknown name.
    """
    if name == "channel":
        return channel()
    if name == "neuron":
        return neuron()
    if name == "diversity":
        return channel_with_diversity(diversity_weight)
    raise ValueError(f"objective must be one of {OBJECTIVE_NAMES}. Received: objective={name!r}")
