"""genbayes: generalized Bayesian inference for NumPyro.

The public API (see the README and DESIGN.md):

- :func:`reweight`, :func:`tempered`: the weighted-likelihood core handlers;
- :func:`gibbs`, :class:`Loss`, :mod:`genbayes.losses`, :mod:`genbayes.fisher`, :func:`calibrate`:
  Gibbs (loss-based) posteriors and their learning rates;
- :mod:`genbayes.conjugate`: exact conjugate families;
- :mod:`genbayes.batched`: many weighted posteriors as one compiled, vmapped, shardable program;
- :mod:`genbayes.cv`: Bayesian leave-P-out cross-validation and the marginal-likelihood identity;
- :mod:`genbayes.evidence`: log marginal likelihood estimators and prequential SMC;
- :mod:`genbayes.vcd`: variational contrastive divergence, a NumPyro ELBO improved by MCMC;
- :mod:`genbayes.infomax`: β-VAE / InfoMax / β-TCVAE objectives and information estimators;
- :mod:`genbayes.interop`: ArviZ conversion, PSIS and LOO (the only module that imports arviz);
- :mod:`genbayes.models`: example models and their bundled or simulated data.

Every public name's docstring gives the formula, the reference and an example that runs as a
doctest; ``mkdocs build --strict`` builds the API reference from them (``pip install -e ".[docs]"``).
"""

from . import batched, conjugate, cv, evidence, fisher, infomax, losses, models, vcd
from .calibration import Calibration, calibrate
from .handlers import gibbs, reweight, tempered
from .losses import Loss

__version__ = "0.1.0"

__all__ = [
    "reweight",
    "tempered",
    "gibbs",
    "Loss",
    "losses",
    "fisher",
    "calibrate",
    "Calibration",
    "conjugate",
    "batched",
    "cv",
    "evidence",
    "vcd",
    "infomax",
    "models",
    "__version__",
]
