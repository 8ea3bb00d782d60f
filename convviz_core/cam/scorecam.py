"""Score-CAM: channels weighted by the score of the input masked by each of them."""

import numpy as np

from convviz_core.cam.base import CamMethod, weighted_sum
from convviz_core.cam.passes import score_masked_inputs

# pytorch-grad-cam 1.5.7's epsilon in the min-max normalisation of each mask.
EPSILON = 1e-8
# Small batches were faster than large ones on a 2-core CPU (the early
# layers' activations of a large batch do not fit in the cache).
DEFAULT_BATCH_SIZE = 8


def interpolation_matrix(output_size, input_size):
    """Bilinear resampling with aligned corners, as a matrix.

    Row i holds the weights of the input samples that output sample i mixes:
    the first and last samples of both line up (PyTorch's
    `UpsamplingBilinear2d`, i.e. `align_corners=True`).

    Args:
        output_size: The number of output samples.
        input_size: The number of input samples.

    Returns:
        float64 array (output_size, input_size) whose rows sum to 1.
    """
    matrix = np.zeros((output_size, input_size))
    if input_size == 1 or output_size == 1:
        matrix[:, 0] = 1.0
        return matrix
    positions = np.arange(output_size) * (input_size - 1) / (output_size - 1)
    lower = np.minimum(np.floor(positions).astype(int), input_size - 2)
    fractions = positions - lower
    rows = np.arange(output_size)
    matrix[rows, lower] = 1 - fractions
    matrix[rows, lower + 1] += fractions
    return matrix


def score_cam_masks(features):
    """The distinct normalised channel maps Score-CAM masks the input with, at layer size.

    Each channel's map is min-max normalised (+1e-8) as pytorch-grad-cam
    does after upsampling: bilinear upsampling with aligned corners keeps a
    map's minimum and maximum (each output is a convex mix and the corners
    are copied), so normalising before upsampling gives the same masks.
    Channels with the same mask give the same masked input and so the same
    score: they are scored once. All constant channels (all zero, say) share
    the blank mask, and channels active at one pixel only share that pixel's
    mask.

    Args:
        features: float array (height, width, channels).

    Returns:
        (masks float32 (n, layer height, layer width), one per distinct
        mask; int array (channels,), the index in `masks` of each channel's).
    """
    features = np.asarray(features, np.float32)
    lowest, highest = features.min(axis=(0, 1)), features.max(axis=(0, 1))
    masks = (features - lowest) / (highest - lowest + EPSILON)
    masks = np.moveaxis(masks, -1, 0)
    distinct, channel_masks = np.unique(
        masks.reshape(len(masks), -1), axis=0, return_inverse=True
    )
    return distinct.reshape((-1,) + masks.shape[1:]), channel_masks.reshape(-1)


def score_cam_weights(layer_pass, progress=None, batch_size=DEFAULT_BATCH_SIZE):
    """Score-CAM's channel weights: the softmax over channels of the masked-input scores.

    Args:
        layer_pass: A `LayerPass` (the forward pass is enough).
        progress: Optional function called with (masked inputs scored, total)
            after each batch; it may raise to cancel.
        batch_size: Masked inputs per forward pass.

    Returns:
        float64 array (channels,).
    """
    model = layer_pass.model
    features = layer_pass.features
    masks, channel_masks = score_cam_masks(features)
    rows = interpolation_matrix(model.input_size[0], features.shape[0]).astype(np.float32)
    columns = interpolation_matrix(model.input_size[1], features.shape[1]).astype(np.float32)

    def batches():
        for start in range(0, len(masks), batch_size):
            yield np.einsum("Hh,nhw,Ww->nHW", rows, masks[start : start + batch_size], columns)

    scores, _ = score_masked_inputs(
        model,
        layer_pass.inputs,
        batches(),
        layer_pass.class_index,
        progress=progress,
        total=len(masks),
    )
    channel_scores = scores.astype(np.float64)[channel_masks]
    # The softmax over channels, computed stably.
    exponentials = np.exp(channel_scores - channel_scores.max())
    return exponentials / exponentials.sum()


def score_cam_raw_map(layer_pass, progress=None, batch_size=DEFAULT_BATCH_SIZE):
    """Score-CAM before the ReLU.

    Wang et al., "Score-CAM: Score-Weighted Visual Explanations for
    Convolutional Neural Networks", CVPR Workshops 2020 (arXiv:1910.01279).
    As pytorch-grad-cam 1.5.7 (`ScoreCAM`) defines it: each channel's map is
    upsampled bilinearly with aligned corners to the input size, min-max
    normalised (+1e-8), and multiplies the preprocessed model input; the
    class score of each masked input *before* the softmax is taken, and the
    channel weights are the softmax of these scores over channels. The paper
    instead scores the softmax probability, subtracts a baseline's, and
    normalises the masks differently in its code; ConvViz follows the library.
    Channels whose masks are equal (all constant channels, say, whose mask
    is blank) are scored once (`score_cam_masks`).

    Args:
        layer_pass: A `LayerPass`.
        progress: Optional function (done, total) called after each batch of
            masked inputs; it may raise to cancel.
        batch_size: Masked inputs per forward pass.
    """
    weights = score_cam_weights(layer_pass, progress=progress, batch_size=batch_size)
    return weighted_sum(layer_pass.features, weights)


SCORE_CAM = CamMethod(
    name="score-cam",
    title="Score-CAM",
    needs_gradients=False,
    description="Each channel weighted by the class score of the image masked by it (no gradients; "
    "one forward pass per channel, so seconds).",
    paper="Wang et al., Score-CAM, CVPR Workshops 2020",
    raw_map=score_cam_raw_map,
)
