"""A synthetic factorial image set with known generative factors (for disentanglement metrics).

Each image is a binary ``image_size × image_size`` picture of one filled disc (pixels whose
centre lies within the radius are 1). Independent factors
generate it, every combination appearing exactly once (a full grid, like dSprites, Matthey
et al. 2017, at toy scale):

- ``x``: horizontal position of the centre (``num_positions`` evenly spaced values);
- ``y``: vertical position of the centre (same values);
- ``radius``: the disc's radius in pixels, one of ``radii`` (omitted when ``radii`` has a
  single value, leaving two factors).

Centres move by less than a pixel between neighbouring positions, so neighbouring images
overlap and each factor is a gradual direction in pixel space that an encoder can recover. The images are generated
deterministically in NumPy (offline: no files, no network).

Example:
    >>> from genbayes.models.factorial import load_factorial
    >>> data = load_factorial()
    >>> data.images.shape, data.factors.shape, data.factor_names
    ((300, 144), (300, 3), ('x', 'y', 'radius'))
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Factorial", "load_factorial"]


class Factorial(NamedTuple):
    """Images (N, H·W) float32 in {0, 1}, integer factor indices (N, K), names, image shape, factor values.

    A full factorial grid of generative factors, like dSprites (Matthey et al. 2017) at toy
    scale, as needed by disentanglement metrics such as MIG (Chen et al. 2018).

    Attributes:
        images: ``(N, H·W)`` float32 0/1 pixels.
        factors: ``(N, K)`` int32 index of each factor's value.
        factor_names: the K factor names.
        image_shape: ``(H, W)``.
        factor_values: K arrays, the values each factor index refers to.

    Example:
        >>> from genbayes.models.factorial import load_factorial
        >>> load_factorial(image_size=8, num_positions=3, radii=(1.5,))
        Factorial(N=9, image_shape=(8, 8), factors=('x', 'y'))
    """

    images: np.ndarray
    factors: np.ndarray
    factor_names: tuple
    image_shape: tuple
    factor_values: tuple

    def __repr__(self) -> str:
        return f"Factorial(N={self.images.shape[0]}, image_shape={self.image_shape}, factors={self.factor_names})"


def load_factorial(image_size: int = 12, num_positions: int = 10, radii: tuple = (1.5, 2.0, 2.5)) -> Factorial:
    """Every (x, y, radius) combination rendered as a filled disc on an ``image_size``² canvas.

        image[r, c] = 1{(r − y)² + (c − x)² <= radius²},   x, y ∈ linspace(2.5, image_size − 3.5, num_positions)

    Args:
        image_size: side of the canvas in pixels (>= 6).
        num_positions: number of centre positions along each axis (>= 2).
        radii: disc radii in pixels (> 0); a single radius gives two factors.

    Returns:
        :class:`Factorial`; ``factors[:, k]`` is the index of the k-th factor's value in
        ``factor_values[k]``.

    Reference: a toy-scale dSprites (Matthey et al. 2017): every factor combination exactly once.

    Example:
        >>> from genbayes.models.factorial import load_factorial
        >>> data = load_factorial(image_size=8, num_positions=2, radii=(1.5, 2.5))
        >>> data.images.shape, data.factors[:3].tolist()
        ((8, 64), [[0, 0, 0], [0, 0, 1], [0, 1, 0]])
    """
    image_size, num_positions = int(image_size), int(num_positions)
    radii = tuple(float(w) for w in radii)
    if image_size < 6:
        raise ValueError(f"`image_size` must be >= 6, got {image_size}.")
    if num_positions < 2:
        raise ValueError(f"`num_positions` must be >= 2, got {num_positions}.")
    if not radii or min(radii) <= 0:
        raise ValueError(f"`radii` must hold positive disc radii, got {radii!r}.")
    pos = np.linspace(2.5, image_size - 3.5, num_positions)
    grid = np.stack(
        np.meshgrid(np.arange(num_positions), np.arange(num_positions), np.arange(len(radii)), indexing="ij"), -1
    ).reshape(-1, 3)
    cx, cy, w = pos[grid[:, 0]], pos[grid[:, 1]], np.asarray(radii)[grid[:, 2]]
    r = np.arange(image_size, dtype=float)
    d2 = (r[None, :, None] - cy[:, None, None]) ** 2 + (r[None, None, :] - cx[:, None, None]) ** 2
    images = (d2 <= w[:, None, None] ** 2).astype(np.float32)
    names, values = ("x", "y", "radius"), (pos, pos, np.asarray(radii))
    if len(radii) == 1:
        grid, names, values = grid[:, :2], names[:2], values[:2]
    return Factorial(
        images.reshape(len(grid), -1), grid.astype(np.int32), names, (image_size, image_size), values
    )
