"""genbayes: generalized Bayesian inference for NumPyro.

The public API (see the README and DESIGN.md):

- :func:`reweight`, :func:`tempered`: the weighted-likelihood core handlers;
- :mod:`genbayes.conjugate`: exact conjugate families;
- :mod:`genbayes.batched`: many weighted posteriors as one compiled, vmapped, shardable program.
"""

from . import batched, conjugate, models
from .handlers import reweight, tempered

__version__ = "0.1.0"

__all__ = ["reweight", "tempered", "conjugate", "batched", "models", "__version__"]
