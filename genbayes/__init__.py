"""genbayes: generalized Bayesian inference for NumPyro.

The public API (see the README and DESIGN.md):

- :func:`reweight`, :func:`tempered`: the weighted-likelihood core handlers;
- :mod:`genbayes.units`: observation units (what every tool weights, holds out and bootstraps);
- :func:`gibbs`, :class:`Loss`, :mod:`genbayes.losses`, :mod:`genbayes.fisher`, :func:`calibrate`:
  Gibbs (loss-based) posteriors and their learning rates;
- :mod:`genbayes.conjugate`: exact conjugate families;
- :mod:`genbayes.batched`: many weighted posteriors as one compiled, vmapped, shardable program;
- :mod:`genbayes.cv`: Bayesian leave-P-out cross-validation and the marginal-likelihood identity;
- :mod:`genbayes.evidence`: log marginal likelihood estimators and prequential SMC;
- :mod:`genbayes.sgmcmc`: minibatch Gibbs posteriors with BlackJAX's SGLD / SGHMC kernels;
- :mod:`genbayes.bounds`: PAC-Bayes and information-theoretic generalization bounds for Gibbs posteriors;
- :mod:`genbayes.vcd`: variational contrastive divergence, a NumPyro ELBO improved by MCMC;
- :mod:`genbayes.infomax`: β-VAE / InfoMax / β-TCVAE objectives and information estimators;
- :mod:`genbayes.interop`: ArviZ conversion, PSIS and LOO (the only module that imports arviz);
- :mod:`genbayes.models`: example models and their bundled or simulated data.

Every public name's docstring gives the formula, the reference and an example that runs as a
doctest; ``mkdocs build --strict`` builds the API reference from them (``pip install -e ".[docs]"``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# Submodules and names load on first use (PEP 562), so ``import genbayes`` and the ``genbayes``
# command start in milliseconds rather than the ~4 s of importing JAX, NumPyro and Optax; the
# ``genbayes demo`` parent process then never imports them at all (its workers do).
_SUBMODULES = ("batched", "bounds", "bridge", "calibration", "conjugate", "cv", "evidence", "fisher", "handlers", "infomax", "interop",
               "losses", "models", "sgmcmc", "units", "vcd")
_NAMES = {"Calibration": "calibration", "calibrate": "calibration", "gibbs": "handlers", "reweight": "handlers",
          "tempered": "handlers", "Loss": "losses", "use_cpu_devices": "_programs"}

if TYPE_CHECKING:  # pragma: no cover - static analysis and IDEs see the eager imports
    from . import (batched, bounds, bridge, calibration, conjugate, cv, evidence, fisher, handlers, infomax,  # noqa: F401
                   interop, losses, models, sgmcmc, units, vcd)
    from .calibration import Calibration, calibrate  # noqa: F401
    from .handlers import gibbs, reweight, tempered  # noqa: F401
    from ._programs import use_cpu_devices  # noqa: F401
    from .losses import Loss  # noqa: F401


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _NAMES:
        value = getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBMODULES) | set(_NAMES))


__version__ = "0.1.0"

__all__ = [
    "reweight",
    "tempered",
    "units",
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
    "bounds",
    "sgmcmc",
    "vcd",
    "infomax",
    "models",
    "use_cpu_devices",
    "__version__",
]
