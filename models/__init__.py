"""Example models and their data loaders: plain NumPyro functions and bundled data.

They live inside the package (``genbayes.models``) rather than in a top-level ``models``
package so that they are importable from any working directory once genbayes is installed,
without claiming the generic top-level name ``models`` in site-packages.
"""

from . import (
    classification,
    factorial,
    logistic_regression,
    median,
    pima,
    quantile_regression,
    radiata_pine,
    robust_regression,
    toy2d,
    vae,
)

__all__ = [
    "classification",
    "factorial",
    "logistic_regression",
    "median",
    "pima",
    "quantile_regression",
    "radiata_pine",
    "robust_regression",
    "toy2d",
    "vae",
]
