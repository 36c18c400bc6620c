r"""Per-observation losses, and :class:`Loss`: a loss written as a NumPyro pseudo-distribution.

A Gibbs (generalized) posterior replaces the likelihood by a loss :math:`\ell(\theta, x)`:

.. math:: \pi_w(\theta \mid x_{1:n}) \propto \exp\Big(-w \sum_i \ell(\theta, x_i)\Big)\, \pi(\theta)

(Bissiri, Holmes & Walker 2016, eq. 1). Every loss here has the signature
``loss(prediction, observation) -> array`` of the broadcast shape of its two arguments (one
value per observation, never summed), is differentiable in ``prediction`` (a subgradient where
it has a kink) and carries attributes that the calibration code reads:

- ``name``: a readable name, e.g. ``"check(tau=0.9)"`` (stored in ArviZ attrs);
- ``smooth``: ``False`` when the second derivative in ``prediction`` is zero almost everywhere
  (absolute, check, hinge), so an autodiff Hessian says nothing about curvature and
  :mod:`genbayes.fisher` smooths it instead;
- ``log_normalizer`` (only where closed form): :math:`w \mapsto \log \int e^{-w \ell(f, y)} dy`
  (squared, absolute, check), which turns :math:`e^{-w\ell}` into a density (used by SafeBayes);
- ``margin``: ``True`` for classification losses of the margin :math:`y \cdot f` (hinge,
  logistic), ``False`` for losses of the residual :math:`u = y - f`;
- ``loss_range`` (only for bounded losses: :func:`sigmoid`, ``zero_one``): the interval ``(a, b)``
  holding every value, read by the PAC-Bayes bounds of :mod:`genbayes.bounds`.
"""

from __future__ import annotations

import functools

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from numpyro.distributions import constraints

from ._validation import is_concrete

__all__ = [
        "squared",
    "absolute",
    "check",
    "huber",
    "pseudo_huber",
    "tukey_biweight",
    "hinge",
    "logistic",
    "negative_log_likelihood",
    "sigmoid",
    "zero_one",
    "Loss",
    "loss_name",
]


def _tag(fn, name: str, *, smooth: bool = True, margin: bool = False, doc: str | None = None, log_normalizer=None,
         loss_range=None):
    """The loss ``fn`` with its inputs checked, and the calibration metadata (``name``, ``smooth``,
    ``margin``, ``log_normalizer``, ``loss_range``) attached."""

    @functools.wraps(fn)
    def loss(p, y):
        _check_inputs(p, y, name)
        return fn(p, y)

    loss.name, loss.smooth, loss.margin = name, smooth, margin
    if log_normalizer is not None:
        loss.log_normalizer = log_normalizer
    if loss_range is not None:
        loss.loss_range = loss_range
    if doc is not None:
        loss.__doc__ = doc
    return loss


def _check_inputs(p, y, name):
    """Concrete predictions and observations must be real and not NaN (a NaN in gives a NaN loss out,
    which would make the Gibbs log density NaN); traced ones are the compiled program's business."""
    for x, arg in ((p, "prediction"), (y, "observation")):
        if is_concrete(x):
            arr = _real_array(x, arg)
            if np.isnan(arr).any():
                raise ValueError(f"`{arg}` passed to loss {name} contains NaN (first at index "
                                 f"{np.argwhere(np.isnan(arr))[0].tolist()}); the loss would be NaN there.")


def loss_name(loss) -> str:
    """The readable name of a loss (its ``name`` attribute, else its ``__name__``, else repr).

    Args:
        loss: a loss function (or any object).

    Returns:
        str: the name stored with the loss, e.g. in ArviZ attributes.

    Example:
        >>> import genbayes.losses as L
        >>> L.loss_name(L.check(0.9)), L.loss_name(L.squared), L.loss_name(lambda f, y: y - f)
        ('check(tau=0.9)', 'squared', '<lambda>')
    """
    return getattr(loss, "name", None) or getattr(loss, "__name__", None) or repr(loss)


def _real_array(x, argname):
    """``x`` as a float array; a clear ``TypeError`` for strings, complex numbers and other non-numbers."""
    if np.iscomplexobj(x):
        raise TypeError(f"`{argname}` must be a real number, got the complex value {x!r} "
                        f"(dtype {np.asarray(x).dtype}); pass its real part (np.real).")
    try:
        return np.asarray(x, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"`{argname}` must be a real number (or an array of them), got {x!r}.") from None


def _positive_scalar(x, argname, what):
    if is_concrete(x):
        arr = _real_array(x, argname)
        if arr.ndim:
            raise TypeError(f"`{argname}` must be a single number ({what}), got {x!r}.")
        if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
            raise ValueError(f"`{argname}` must be finite and > 0 ({what}), got {x!r}.")
    return x


def _fmt(x):
    if is_concrete(x):
        arr = np.asarray(x)
        return f"{float(arr):g}" if arr.ndim == 0 else np.array2string(arr, precision=4, separator=",")
    return "traced"


def _squared(p, y):
    return 0.5 * jnp.square(y - p)


squared = _tag(_squared, "squared", log_normalizer=lambda w: 0.5 * jnp.log(2 * jnp.pi / w), doc=r"""Squared loss :math:`\ell(f, y) = \tfrac12 (y - f)^2`.

At learning rate :math:`w = 1/\sigma^2` the Gibbs posterior is the Normal(f, σ) posterior: the
least-squares criterion (Legendre 1805) as a Gibbs loss (Bissiri, Holmes & Walker 2016).

Example:
    >>> import jax.numpy as jnp, genbayes.losses as L
    >>> L.squared(jnp.array([0.0, 1.0]), jnp.array([2.0, 1.0])).tolist()
    [2.0, 0.0]
""")


def _absolute(p, y):
    # autodiff of jnp.abs at u = 0 returns a value in [-1, 1]: a valid subgradient
    return jnp.abs(y - p)


absolute = _tag(_absolute, "absolute", smooth=False, log_normalizer=lambda w: jnp.log(2.0 / w), doc=r"""Absolute loss :math:`\ell(f, y) = |y - f|`; its minimiser is the median.

Its second derivative is zero almost everywhere (see ``smooth``). At learning rate w it is the
Laplace(f, 1/w) likelihood up to a constant. It is twice the check loss at τ = 1/2
(Koenker & Bassett 1978).

Example:
    >>> import jax.numpy as jnp, genbayes.losses as L
    >>> L.absolute(0.0, jnp.array([-2.0, 3.0])).tolist()
    [2.0, 3.0]
""")


def check(tau) :
    r"""Check (pinball, quantile) loss :math:`\rho_\tau(u) = u\,(\tau - 1\{u < 0\})`, :math:`u = y - f`.

    Its minimiser is the τ-quantile (Koenker & Bassett 1978). With learning rate w it equals the
    ``AsymmetricLaplaceQuantile(f, scale=1/w, quantile=tau)`` likelihood up to the
    θ-independent constant :math:`\log(\tau(1-\tau) w)`. Written as
    :math:`\max(\tau u, (\tau - 1) u)`, so at :math:`u = 0` autodiff returns the subgradient
    :math:`\tau - 1/2`. The second derivative is zero almost everywhere.

    Args:
        tau: quantile level(s) in (0, 1); an array broadcasts against the prediction
            (e.g. shape ``(K,)`` with predictions ``(n, K)`` fits K quantiles at once).

    Example:
        >>> import jax.numpy as jnp, genbayes.losses as L
        >>> [round(v, 6) for v in L.check(0.9)(0.0, jnp.array([1.0, -1.0])).tolist()]
        [0.9, 0.1]
    """
    if is_concrete(tau):
        arr = _real_array(tau, "tau")
        if not np.all((arr > 0) & (arr < 1)):
            raise ValueError(f"`tau` must lie strictly between 0 and 1, got {tau!r}.")
    t = jnp.asarray(tau)

    def _check(p, y):
        u = y - p
        return jnp.maximum(t * u, (t - 1.0) * u)

    return _tag(_check, f"check(tau={_fmt(tau)})", smooth=False, log_normalizer=lambda w: -jnp.log(t * (1 - t) * w))


def huber(delta=1.345) :
    r"""Huber loss: :math:`\tfrac12 u^2` for :math:`|u| \le \delta`, else :math:`\delta(|u| - \tfrac12\delta)`.

    Quadratic near zero, linear in the tails (Huber 1964); ``delta = 1.345`` gives 95% efficiency
    at the normal model for residuals of unit scale (standardise y, or scale δ with it).

    Example:
        >>> import jax.numpy as jnp, genbayes.losses as L
        >>> L.huber(1.0)(0.0, jnp.array([0.5, 3.0])).tolist()
        [0.125, 2.5]
    """
    _positive_scalar(delta, "delta", "the Huber threshold")

    def _huber(p, y):
        u = jnp.abs(y - p)
        quad = jnp.minimum(u, delta)
        return 0.5 * quad**2 + delta * (u - quad)

    return _tag(_huber, f"huber(delta={_fmt(delta)})")


def pseudo_huber(delta=1.0) :
    r"""Pseudo-Huber loss :math:`\delta^2 (\sqrt{1 + (u/\delta)^2} - 1)`: a smooth Huber (Charbonnier 1997).

    Example:
        >>> import genbayes.losses as L
        >>> round(float(L.pseudo_huber(1.0)(0.0, 1.0)), 6)
        0.414214
    """
    _positive_scalar(delta, "delta", "the pseudo-Huber scale")

    def _pseudo_huber(p, y):
        u = (y - p) / delta
        return delta**2 * (jnp.sqrt(1.0 + u**2) - 1.0)

    return _tag(_pseudo_huber, f"pseudo_huber(delta={_fmt(delta)})")


def tukey_biweight(c=4.685) :
    r"""Tukey's biweight loss: :math:`\tfrac{c^2}{6}\big(1 - (1 - (u/c)^2)^3\big)` for :math:`|u| \le c`, else :math:`c^2/6`.

    Bounded, so gross outliers have no influence (Beaton & Tukey 1974); not convex, so the
    Gibbs posterior may be multimodal. ``c = 4.685`` gives 95% efficiency at the normal model.

    Example:
        >>> import genbayes.losses as L
        >>> round(float(L.tukey_biweight(1.0)(0.0, 5.0)), 6)
        0.166667
    """
    _positive_scalar(c, "c", "the biweight cut-off")

    def _tukey(p, y):
        r = jnp.minimum(jnp.abs(y - p) / c, 1.0)
        return c**2 / 6.0 * (1.0 - (1.0 - r**2) ** 3)

    return _tag(_tukey, f"tukey_biweight(c={_fmt(c)})")


def _signed(y):
    # labels in {0, 1} or {-1, 1}: both map 0/-1 -> -1 and 1 -> +1
    if is_concrete(y):  # checked whenever the labels are known at trace time (data passed to the model)
        bad = np.setdiff1d(np.unique(_real_array(y, "labels")), [-1, 0, 1])
        if bad.size:
            raise ValueError(f"labels of a margin loss (hinge, logistic, sigmoid, zero_one) must be in {{0, 1}} or {{-1, 1}} (0 and -1 both mean the "
                             f"negative class), got other values {bad[:5].tolist()}; recode them, e.g. y = (y == "
                             f"positive_class).astype(int).")
    return jnp.where(jnp.asarray(y) > 0, 1.0, -1.0)


def _hinge(p, y):
    return jnp.maximum(0.0, 1.0 - _signed(y) * p)


hinge = _tag(_hinge, "hinge", smooth=False, margin=True, doc=r"""Hinge loss :math:`\max(0, 1 - s f)` with :math:`s = \pm 1` (the support vector machine loss).

Labels may be given in {0, 1} or in {−1, 1} (0 and −1 both mean the negative class); ``f`` is
a real-valued score. The second derivative is zero almost everywhere. Reference: Cortes &
Vapnik (1995), "Support-vector networks".

Example:
    >>> import jax.numpy as jnp, genbayes.losses as L
    >>> L.hinge(jnp.array([2.0, 0.5, 0.5]), jnp.array([1, 1, 0])).tolist()
    [0.0, 0.5, 1.5]
""")


def _logistic(p, y):
    return jax.nn.softplus(-_signed(y) * p)


logistic = _tag(_logistic, "logistic", margin=True, doc=r"""Logistic loss :math:`\log(1 + e^{-s f})`, :math:`s = \pm 1`; labels in {0, 1} or {−1, 1}.

With labels in {0, 1} it is exactly :math:`-\log \mathrm{Bernoulli}(y \mid \mathrm{logits}=f)`, the
loss of logistic regression (Cox 1958).

Example:
    >>> import genbayes.losses as L
    >>> round(float(L.logistic(0.0, 1)), 6)
    0.693147
""")


def sigmoid(scale=1.0) :
    r"""Sigmoid loss :math:`\ell(f, y) = 1/(1 + e^{s f / c})`, :math:`s = \pm 1`: a smooth surrogate of the 0-1 loss.

    Bounded in (0, 1) (``loss_range = (0, 1)``), so the PAC-Bayes bounds of :mod:`genbayes.bounds`
    apply to it, and differentiable everywhere, so NUTS can sample its Gibbs posterior (the 0-1
    loss has zero gradient almost everywhere). As the scale c → 0 it tends to the 0-1 loss
    :math:`1\{s f < 0\}` (value 1/2 at f = 0); it is the smoothed 0-1 loss of Mason, Baxter,
    Bartlett & Frean (2000, "Boosting algorithms as gradient descent"). Not convex: the Gibbs
    posterior may be multimodal. Labels in {0, 1} or {−1, 1}.

    Args:
        scale: c > 0, the width of the transition around the decision boundary f = 0.

    Example:
        >>> import jax.numpy as jnp, genbayes.losses as L
        >>> [round(v, 4) for v in L.sigmoid(1.0)(jnp.array([0.0, 2.0, 2.0]), jnp.array([1, 1, 0])).tolist()]
        [0.5, 0.1192, 0.8808]
        >>> L.sigmoid().loss_range
        (0.0, 1.0)
    """
    _positive_scalar(scale, "scale", "the width of the sigmoid around f = 0")

    def _sigmoid(p, y):
        return jax.nn.sigmoid(-_signed(y) * p / scale)

    return _tag(_sigmoid, f"sigmoid(scale={_fmt(scale)})", margin=True, loss_range=(0.0, 1.0))


def _zero_one(p, y):
    # a tie (f = 0) counts as an error: the score gives no decision there
    return jnp.where(_signed(y) * p > 0, 0.0, 1.0)


zero_one = _tag(_zero_one, "zero_one", smooth=False, margin=True, loss_range=(0.0, 1.0), doc=r"""The 0-1 loss :math:`1\{s f \le 0\}`, :math:`s = \pm 1`: the misclassification indicator of a score f.

For evaluation (test error, the risk a PAC-Bayes bound controls), not for NUTS: its gradient is
zero almost everywhere, so a Gibbs posterior under it cannot be sampled by gradient-based MCMC;
use :func:`sigmoid` there. A tie f = 0 counts as an error. Labels in {0, 1} or {−1, 1};
``loss_range = (0, 1)``. Its risk is the misclassification probability that the PAC-Bayes bounds of
McAllester (1999) and Catoni (2007) were first stated for.

Example:
    >>> import jax.numpy as jnp, genbayes.losses as L
    >>> L.zero_one(jnp.array([2.0, -0.5, 0.0]), jnp.array([1, 1, 0])).tolist()
    [0.0, 1.0, 1.0]
""")


def negative_log_likelihood(make_dist: Callable) :
    r"""The loss :math:`\ell(f, y) = -\log p(y \mid f)` for ``p = make_dist(f)``, any NumPyro distribution.

    At learning rate 1 the Gibbs posterior is the ordinary posterior of that likelihood, so
    ordinary Bayes is the special case ``loss = negative_log_likelihood(...)``, ``w = 1``
    (the self-information loss of Bissiri, Holmes & Walker 2016).

    Args:
        make_dist: ``prediction -> numpyro.distributions.Distribution``, e.g.
            ``lambda f: dist.Normal(f, 2.0)``.

    Example:
        >>> import numpyro.distributions as dist, genbayes.losses as L
        >>> nll = L.negative_log_likelihood(lambda f: dist.Normal(f, 1.0))
        >>> round(float(nll(0.0, 0.0)), 6)
        0.918939
    """
    if not callable(make_dist):
        raise TypeError(f"`make_dist` must be a callable prediction -> Distribution, got {make_dist!r}.")

    def _nll(p, y):
        return -make_dist(p).log_prob(y)

    name = getattr(make_dist, "__name__", "dist")
    return _tag(_nll, f"negative_log_likelihood({name})")


class Loss(dist.Distribution):
    r"""A loss as a NumPyro pseudo-distribution: ``log_prob(y) = -loss_fn(prediction, y)``.

    Observing a site with ``Loss`` contributes :math:`-\sum_i \ell(f_i, y_i)` to the joint log
    density, so inference targets the Gibbs posterior
    :math:`\pi(\theta \mid y) \propto \exp(-w \sum_i \ell(f_i(\theta), y_i))\,\pi(\theta)`
    (Bissiri, Holmes & Walker 2016, eq. 1). The learning rate w is a weight: put the site under
    ``numpyro.handlers.scale``, :class:`genbayes.reweight` or :class:`genbayes.tempered`, or use
    :class:`genbayes.gibbs`. It is not normalised in y; that is harmless because y is observed.
    Plates, masks, subsampling and reweighting work as for any distribution. Sampling raises:
    a loss has no generative model.

    Args:
        loss_fn: ``loss_fn(prediction, observation) -> array`` of the broadcast shape of its
            arguments (see :mod:`genbayes.losses`).
        prediction: array; its shape (without the last ``event_dim`` axes) is the batch shape.
        event_dim: number of trailing axes of the prediction that form one observation (the loss
            must then return the batch shape, i.e. reduce those axes itself).

    Raises:
        TypeError: if ``loss_fn`` is not callable.
        ValueError: from ``log_prob`` if the loss returns the wrong shape, and from ``sample``.

    Example:
        >>> import jax.numpy as jnp, numpyro, numpyro.distributions as dist, genbayes as gb
        >>> from genbayes.losses import Loss, check
        >>> def model(X, y):
        ...     beta = numpyro.sample("beta", dist.Normal(0.0, 10.0).expand([2]).to_event(1))
        ...     with numpyro.plate("n", X.shape[0]):
        ...         numpyro.sample("y", Loss(check(0.9), X @ beta), obs=y)
        >>> from numpyro.infer.util import log_density
        >>> X, y = jnp.ones((3, 2)), jnp.array([0.0, 1.0, 2.0])
        >>> lp, _ = log_density(model, (X, y), {}, {"beta": jnp.zeros(2)})
        >>> round(float(lp - dist.Normal(0.0, 10.0).log_prob(0.0) * 2), 6)   # -(0.9*1 + 0.9*2)
        -2.7
    """

    arg_constraints = {}
    support = constraints.real
    pytree_data_fields = ("prediction",)
    pytree_aux_fields = ("loss_fn", "_loss_event_dim")

    def __init__(self, loss_fn, prediction, *, event_dim: int = 0, validate_args=None):
        if not callable(loss_fn):
            raise TypeError(f"`loss_fn` must be a callable loss(prediction, observation), got {loss_fn!r}.")
        if isinstance(event_dim, bool) or not isinstance(event_dim, (int, np.integer)) or event_dim < 0:
            raise ValueError(f"`event_dim` must be a non-negative integer, got {event_dim!r}.")
        self.loss_fn = loss_fn
        self.prediction = prediction
        self._loss_event_dim = int(event_dim)
        shape = tuple(jnp.shape(prediction))
        if event_dim > len(shape):
            raise ValueError(f"`event_dim`={event_dim} exceeds the number of prediction axes {len(shape)}.")
        split = len(shape) - event_dim
        super().__init__(batch_shape=shape[:split], event_shape=shape[split:], validate_args=validate_args)

    @property
    def name(self) -> str:
        """The loss's name (``"check(tau=0.5)"``, ``"huber(delta=1.0)"``, ...), as :func:`loss_name` gives it."""
        return loss_name(self.loss_fn)

    def sample(self, key, sample_shape=()):
        raise ValueError(
            f"gb.Loss({self.name}) cannot be sampled: a loss has no generative model. Observe the site "
            "(obs=...), or, to simulate or predict, run the likelihood model without gb.gibbs/gb.Loss."
        )

    def log_prob(self, value):
        out = -self.loss_fn(self.prediction, value)
        value_batch = tuple(jnp.shape(value))[: max(jnp.ndim(value) - self._loss_event_dim, 0)]
        expected = tuple(np.broadcast_shapes(self.batch_shape, value_batch))
        if tuple(jnp.shape(out)) != expected:
            raise ValueError(
                f"loss {self.name} returned shape {tuple(jnp.shape(out))} for predictions of shape "
                f"{tuple(jnp.shape(self.prediction))} and observations of shape {tuple(jnp.shape(value))}; "
                f"it must return one value per observation, shape {expected} (do not sum over observations"
                + (f", and reduce the last {self._loss_event_dim} event axes)" if self._loss_event_dim else ")")
                + "."
            )
        if is_concrete(out):
            arr = np.asarray(out)
            if np.iscomplexobj(arr):
                raise TypeError(f"loss {self.name} returned complex values (dtype {arr.dtype}); a loss must be real.")
            if np.isnan(arr).any():  # one NaN term makes the whole (Gibbs) log density NaN
                from ._validation import NonFiniteLoss

                raise NonFiniteLoss(
                    f"loss {self.name} returned NaN for {int(np.isnan(arr).sum())} of {arr.size} observation(s) "
                    f"(first at index {np.argwhere(np.isnan(arr))[0].tolist()}); check the data there and the "
                    "loss's domain.")
        return out

    @property
    def mean(self):
        raise ValueError(f"gb.Loss({self.name}) has no mean: a loss is not a probability distribution.")

    @property
    def variance(self):
        raise ValueError(f"gb.Loss({self.name}) has no variance: a loss is not a probability distribution.")

    def __repr__(self):
        return f"Loss({self.name}, batch_shape={self.batch_shape}, event_shape={self.event_shape})"
