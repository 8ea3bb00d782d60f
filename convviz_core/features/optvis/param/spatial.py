"""The spatial parameterisation of an optimised image: Fourier coefficients or pixels.

Gradient ascent on raw pixels piles up high frequencies: the gradient of a
convnet is dominated by them, so the picture fills with fine noise before any
larger structure forms. Parameterising the image by its Fourier coefficients,
each scaled by 1 / frequency, makes a step of the same size move low
frequencies as much as high ones: the optimisation is preconditioned towards
the natural 1/f spectrum of photographs (Olah et al., "Feature
Visualization", Distill 2017, section "Preconditioning and
Parameterization"; Mordvintsev et al., "Differentiable Image
Parameterizations", Distill 2018).

A parameterisation maps a float32 parameter tensor (batch first) to an
unbounded image (batch, height, width, channels); `param.color.to_valid_rgb`
then maps it to pixels in [0, 1].
"""

import numpy as np
import tensorflow as tf

# Lucid divides the Fourier image by this constant; smaller images start less
# saturated after the sigmoid.
_FOURIER_IMAGE_DIVISOR = 4.0


def fourier_frequencies(height, width):
    """The radial frequency of each coefficient of a real 2-D FFT.

    Args:
        height: Image height in pixels.
        width: Image width in pixels.

    Returns:
        float64 array (height, width // 2 + 1) of frequencies in cycles per
        pixel, from 0 (the mean) to about 0.71 (the Nyquist corner).
    """
    vertical = np.fft.fftfreq(height)[:, np.newaxis]
    horizontal = np.fft.rfftfreq(width)[np.newaxis, :]
    return np.sqrt(vertical**2 + horizontal**2)


def fourier_scale(height, width, decay_power=1.0):
    """The factor each Fourier coefficient is multiplied by: 1 / frequency^decay_power.

    The lowest frequency is clamped to one cycle per image so that the mean
    gets a finite factor. The factor includes sqrt(height * width), which makes
    TensorFlow's inverse FFT (normalised by 1 / (height * width)) orthonormal.

    Returns:
        float32 array (height, width // 2 + 1).
    """
    frequencies = fourier_frequencies(height, width)
    scale = 1.0 / np.maximum(frequencies, 1.0 / max(height, width)) ** decay_power
    return (scale * np.sqrt(height * width)).astype(np.float32)


class FourierImage:
    """Images parameterised by their 1/f-scaled Fourier coefficients.

    The parameters of one image are the real and imaginary parts of its real
    2-D FFT, per colour channel: shape (channels, height, width // 2 + 1, 2).

    Args:
        height: Image height in pixels.
        width: Image width in pixels.
        channels: Colour channels. Default: 3.
        decay_power: The exponent of the 1 / frequency scaling (1 as in
            Lucid; 0 gives a plain orthonormal Fourier basis).
        standard_deviation: Of the normal noise the parameters start from.
    """

    kind = "fourier"

    def __init__(self, height, width, channels=3, decay_power=1.0, standard_deviation=0.01):
        self.height, self.width, self.channels = int(height), int(width), int(channels)
        self.standard_deviation = float(standard_deviation)
        self.scale = fourier_scale(self.height, self.width, decay_power)
        self.parameter_shape = (self.channels, self.height, self.width // 2 + 1, 2)
        # The gradient of `to_image` is one forward real FFT times these
        # factors (see `to_image`): the 1/f scale, the divisor, the inverse
        # FFT's 1 / (height * width), and 2 for every column that stands for
        # itself and its mirror image in the real FFT's half spectrum.
        mirrored = np.full(self.width // 2 + 1, 2.0)
        mirrored[0] = 1.0
        if self.width % 2 == 0:
            mirrored[-1] = 1.0
        self.gradient_factor = (
            self.scale * mirrored[np.newaxis, :] / (self.height * self.width * _FOURIER_IMAGE_DIVISOR)
        ).astype(np.float32)

    def initial_parameters(self, seeds):
        """Normal noise, one independent draw per seed.

        Args:
            seeds: A list of seeds (ints or sequences of ints), one per image.

        Returns:
            float32 array (len(seeds), *parameter_shape).
        """
        return np.stack(
            [
                np.random.default_rng(seed).normal(size=self.parameter_shape) * self.standard_deviation
                for seed in seeds
            ]
        ).astype(np.float32)

    def to_image(self, parameters):
        """Maps parameters to unbounded images (differentiable).

        Args:
            parameters: float32 tensor (batch, *parameter_shape).

        Returns:
            float32 tensor (batch, height, width, channels).
        """
        return self._inverse_transform(tf.convert_to_tensor(parameters, tf.float32))

    @tf.custom_gradient
    def _inverse_transform(self, parameters):
        # The image is linear in the parameters: a coefficient a + ib of column
        # kx adds a cos(phase) - b sin(phase) to each pixel (twice, for a
        # mirrored column), scaled. Its gradient is therefore the forward real
        # FFT of the pixels' gradient, times `gradient_factor`: one FFT and a
        # product, about twice as fast as differentiating the complex product,
        # the inverse FFT and the transpose one by one (equal to that to
        # float precision: tests/test_optvis.py).
        scale = tf.constant(self.scale / _FOURIER_IMAGE_DIVISOR, tf.float32)
        spectrum = tf.complex(parameters[..., 0] * scale, parameters[..., 1] * scale)
        image = tf.transpose(tf.signal.irfft2d(spectrum, fft_length=[self.height, self.width]), [0, 2, 3, 1])

        def gradient(upstream):
            frequencies = tf.signal.rfft2d(tf.transpose(upstream, [0, 3, 1, 2]), fft_length=[self.height, self.width])
            factor = tf.constant(self.gradient_factor, tf.float32)
            return tf.stack([tf.math.real(frequencies) * factor, tf.math.imag(frequencies) * factor], axis=-1)

        return image, gradient

    def from_image(self, images):
        """The parameters whose `to_image` is the given images (the inverse map).

        Args:
            images: float32 tensor (batch, height, width, channels).

        Returns:
            float32 tensor (batch, *parameter_shape).
        """
        images = tf.transpose(tf.cast(images, tf.float32) * _FOURIER_IMAGE_DIVISOR, [0, 3, 1, 2])
        spectrum = tf.signal.rfft2d(images, fft_length=[self.height, self.width])
        spectrum = spectrum / tf.cast(self.scale, tf.complex64)
        return tf.stack([tf.math.real(spectrum), tf.math.imag(spectrum)], axis=-1)


class PixelImage:
    """Images parameterised by their pixels, the baseline (and a simple case for tests).

    Args:
        height: Image height in pixels.
        width: Image width in pixels.
        channels: Colour channels. Default: 3.
        standard_deviation: Of the normal noise the pixels start from.
    """

    kind = "pixel"

    def __init__(self, height, width, channels=3, standard_deviation=0.01):
        self.height, self.width, self.channels = int(height), int(width), int(channels)
        self.standard_deviation = float(standard_deviation)
        self.parameter_shape = (self.height, self.width, self.channels)

    def initial_parameters(self, seeds):
        """Normal noise, one independent draw per seed; see `FourierImage`."""
        return np.stack(
            [
                np.random.default_rng(seed).normal(size=self.parameter_shape) * self.standard_deviation
                for seed in seeds
            ]
        ).astype(np.float32)

    def to_image(self, parameters):
        """The parameters are the image."""
        return tf.convert_to_tensor(parameters, tf.float32)

    def from_image(self, images):
        """The image is the parameters."""
        return tf.convert_to_tensor(images, tf.float32)


PARAMETERIZATIONS = {"fourier": FourierImage, "pixel": PixelImage}


def image_parameterization(kind, height, width, channels=3):
    """Builds the parameterisation named `kind` ("fourier" or "pixel").

    Raises:
        ValueError: For an unknown kind.
    """
    if kind not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {sorted(PARAMETERIZATIONS)}. Received: {kind!r}")
    return PARAMETERIZATIONS[kind](height, width, channels)
