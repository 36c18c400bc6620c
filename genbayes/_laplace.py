"""The Laplace approximation of the log evidence, at the mode of the unconstrained log joint."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ._evidence_core import _program, _starts_at_prior, _warn

def _laplace(model, args, kwargs, rng_key, *, max_iter=1000, tol=1e-6, units):
    import optax

    _starts_at_prior(units, "method='laplace'", "Drop `sites` (approximate the evidence of all observed sites), or "
                                                "use 'stepping_stone'/'thermodynamic', whose ladder starts from the "
                                                "posterior given the other sites.")
    opt = optax.lbfgs()

    def body(flat):
        logp = flat.log_density(jnp.asarray(1.0))
        f = lambda x: -logp(x)  # noqa: E731
        value_and_grad = optax.value_and_grad_from_state(f)

        def step(carry):
            x, state, i = carry
            value, grad = value_and_grad(x, state=state)
            updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=f)
            return optax.apply_updates(x, updates), state, i + 1

        def cond(carry):
            x, state, i = carry
            g = optax.tree_utils.tree_get(state, "grad")
            return (i == 0) | ((i < max_iter) & (jnp.max(jnp.abs(g)) > tol))

        x0 = flat.flat0
        x, _, it = jax.lax.while_loop(cond, step, (x0, opt.init(x0), 0))
        H = jax.hessian(f)(x)
        return x, f(x), jnp.max(jnp.abs(jax.grad(f)(x))), H, it

    run = _program("laplace", model, args, kwargs, units, (max_iter, tol), body, rng_key)
    z0 = run.z0
    unravel = ravel_pytree(z0)[1]
    d = ravel_pytree(z0)[0].shape[0]
    x, fx, gmax, H, it = run()
    H = np.asarray(H)
    eig = np.linalg.eigvalsh(0.5 * (H + H.T))
    problems = []
    if np.any(eig <= 0):
        log_z = float("nan")
        problems.append("the Hessian at the optimum is not positive definite (no local maximum found)")
    else:
        log_z = float(-fx + 0.5 * d * np.log(2 * np.pi) - 0.5 * np.sum(np.log(eig)))
    if not float(gmax) <= 1e3 * tol:
        problems.append(f"L-BFGS stopped with gradient max-norm {float(gmax):.3g} after {int(it)} iterations")
    diag = {"mode": unravel(x), "iterations": int(it), "grad_max": float(gmax),
            "hessian_eigenvalues": eig, "dim": d}
    _warn(problems, "laplace", diag)
    return log_z, 0.0, diag

