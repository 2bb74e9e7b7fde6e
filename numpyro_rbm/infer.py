r"""Block-Gibbs MCMC for the RBM site of a NumPyro model.

:class:`RBMGibbs` is a :class:`numpyro.infer.MCMCKernel` that updates the visible vector
:math:`v` of one RBM sample site (an :class:`numpyro_rbm.RBM` or
:class:`numpyro_rbm.ClampedRBM`) with :math:`k` block-Gibbs sweeps
:math:`h \sim p(h \mid v)`, :math:`v \sim p(v \mid h)` per MCMC step. A sweep is reversible
with respect to the RBM marginal :math:`p(v)`, and so is :math:`K^k`, the :math:`k`-fold
sweep (a power of a self-adjoint operator is self-adjoint).

When other sites of the model depend on :math:`v` (a likelihood :math:`L(v)`, e.g. a noisy
observation of a binary image) the target is :math:`\pi(v) \propto p(v)\,L(v)` and a bare sweep
would sample the prior. The kernel then offers two exact updates:

``"metropolis"``
    Propose :math:`v' \sim K^k(v, \cdot)` and accept with probability
    :math:`\min\{1, L(v') / L(v)\}`. Because :math:`p(v) K^k(v, v') = p(v') K^k(v', v)`, the
    Metropolis–Hastings ratio :math:`\pi(v') K^k(v', v) / \pi(v) K^k(v, v')` reduces to the
    likelihood ratio, so :math:`\pi` is left invariant whatever :math:`L` is.

``"factorized"``
    If :math:`\log L(v) = \sum_i \ell_i(v_i)`, the joint target :math:`p(v, h) L(v)` has the
    exact conditionals :math:`p(h \mid v)` (unchanged) and, for two-state units with values
    :math:`\{a, b\}`,

    .. math::

        \log\frac{\pi(v_i = b \mid h)}{\pi(v_i = a \mid h)}
        = (b - a)\,(b_i + (W h)_i) + \ell_i(b) - \ell_i(a),

    so the likelihood simply shifts the visible field by
    :math:`\Delta_i / (b - a)`, :math:`\Delta_i = \ell_i(b) - \ell_i(a)`. The kernel computes
    :math:`\Delta` once per step from :math:`n + 1` vectorised model evaluations (unit
    :math:`i` flipped from the all-:math:`a` state) and then runs exact sweeps with no
    rejection. Exact only when the likelihood factorises per visible unit: that is the
    user's assertion.

``"prior"``
    Plain sweeps: exact when nothing else in the model depends on :math:`v`.

``"auto"`` (default) picks ``"prior"`` when the RBM site is the only site with a density and
``"metropolis"`` otherwise.

**Potts visible units.** The site value of a Potts RBM (:class:`~numpyro_rbm.units.Potts`) is
the integer sequence :math:`x \in \{0, \dots, q-1\}^L`, and so is the chain state; the core
works on the one-hot layer :math:`v_{ia} = \mathbb 1[x_i = a]`. The kernel converts at its
boundary: one-hot before a sweep (where :math:`v \sim p(v \mid h)` draws each site from its
softmax) and before :math:`F`, back to integers after. ``"prior"`` and ``"metropolis"`` are
exact as above (the sweep is reversible for any unit type); ``"factorized"`` needs two-state
units and is refused. Random initial states are uniform integer sequences.

Inside :class:`numpyro.infer.Gibbs` the kernel is one block
(``Gibbs([(RBMGibbs(model), ["v"]), (NUTS(model), None)])``); it implements ``refresh``,
``wrap_model`` and ``get_constrain_fn``. With ``chain_method="vectorized"`` it vmaps its own
``init`` and ``sample``, as :class:`numpyro.infer.HMC` does.

References:
    G. E. Hinton, *Training products of experts by minimizing contrastive divergence*,
    Neural Computation 14 (2002). L. Tierney, *Markov chains for exploring posterior
    distributions*, Annals of Statistics 22 (1994) (Metropolis–Hastings with a reversible
    proposal).
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.handlers import seed, substitute, trace
from numpyro.infer.initialization import init_to_sample
from numpyro.infer.mcmc import MCMCKernel
from numpyro.util import identity, is_prng_key

from ._threefry import threefry_split
from .clamp import apply_clamp
from .core import RBMParams, free_energy, sample_hidden, visible_field
from .units import Potts

__all__ = ["RBMGibbs", "RBMGibbsState", "block_gibbs"]

_UPDATES = ("auto", "prior", "metropolis", "factorized")


class RBMGibbsState(NamedTuple):
    """State of :class:`RBMGibbs`; every field can be requested as an ``extra_field``.

    - ``z``: ``{site: v}``, the current visible state of the RBM site.
    - ``h``: the hidden state the current ``v`` was drawn from (zeros before the first step).
    - ``free_energy``: :math:`F(v)` of the site's RBM (with clamping, of the full RBM).
    - ``log_likelihood``: :math:`\\log L(v)`, the summed log density of every other site of
      the model at ``v`` (0 in ``"prior"`` mode, where it is not computed).
    - ``potential_energy``: :math:`F(v) - \\log L(v)`, the negative log posterior of ``v`` up
      to a constant (ArviZ shows its negative as ``lp``).
    - ``accept_prob``: Metropolis acceptance probability of the last step (1 for exact
      updates); ``mean_accept_prob``: its running mean.
    - ``i``: the iteration counter; ``rng_key``: the key for the next step.
    """

    z: dict
    h: jax.Array
    free_energy: jax.Array
    log_likelihood: jax.Array
    potential_energy: jax.Array
    accept_prob: jax.Array
    mean_accept_prob: jax.Array
    i: jax.Array
    rng_key: jax.Array


def block_gibbs(
    key, params: RBMParams, v, num_sweeps: int, *, mask=None, values=None, field_offset=None
):
    r"""``num_sweeps`` block-Gibbs sweeps from ``v``, pure JAX.

    Each sweep draws :math:`h \sim p(h \mid v)` then :math:`v \sim p(v \mid h)` with the visible
    field shifted by ``field_offset`` (a per-unit likelihood term, see the module docstring),
    and resets clamped units (``mask`` True) to ``values``.

    Returns:
        ``(v, h)``: the final visible state and the hidden state it was drawn from.
    """
    units = params.visible_layer  # bound to its unit parameters (Gaussian precisions)
    h0 = jnp.zeros(jnp.shape(v)[:-1] + (params.n_hidden,), jnp.result_type(v))

    def sweep(carry, key):
        v, _ = carry
        key_h, key_v = threefry_split(key)
        h = sample_hidden(key_h, params, v)
        field = visible_field(params, h)
        if field_offset is not None:
            field = field + field_offset
        v = apply_clamp(units.sample(key_v, field).astype(v.dtype), mask, values)
        return (v, h), None

    (v, h), _ = jax.lax.scan(sweep, (v, h0), jax.random.split(key, num_sweeps))
    return v, h


def _is_rbm_site(site) -> bool:
    return site["type"] == "sample" and isinstance(getattr(site["fn"], "params", None), RBMParams)


def _is_potts(params: RBMParams) -> bool:
    return isinstance(params.visible_units, Potts)


def _to_layer(params: RBMParams, v):
    """The visible layer the core works on: Potts site values (integer sequences) one-hot."""
    if _is_potts(params):
        return params.visible_units.one_hot(v, params.weights.dtype)
    return v


def _from_layer(params: RBMParams, layer, like):
    """Inverse of :func:`_to_layer`, in the dtype of the site value ``like``."""
    if _is_potts(params):
        return params.visible_units.from_one_hot(layer).astype(like.dtype)
    return layer


def _random_state(key, params: RBMParams, shape, dtype):
    """Uniform random visible states: a cheap start that never enumerates."""
    if _is_potts(params):  # the site holds integer sequences, shape (..., n_sites)
        return jax.random.randint(key, shape, 0, params.visible_units.q, jnp.int32)
    if params.visible_units.values is None:  # Gaussian: a draw from p(v | h = 0)
        field = jnp.broadcast_to(params.visible_bias, shape)
        return params.visible_layer.sample(key, field).astype(dtype)
    low, high = params.visible_units.values
    bits = jax.random.bernoulli(key, 0.5, shape)
    return jnp.where(bits, high, low).astype(dtype)


class RBMGibbs(MCMCKernel):
    r"""Block-Gibbs kernel for the RBM site of a NumPyro model.

    Args:
        model: a NumPyro model with one RBM sample site (an :class:`numpyro_rbm.RBM` or
            :class:`numpyro_rbm.ClampedRBM`), possibly with other sites that depend on it.
        site: name of the RBM site; found automatically when the model has exactly one.
        num_sweeps: block-Gibbs sweeps :math:`k` per MCMC step.
        update: ``"auto"``, ``"prior"``, ``"metropolis"`` or ``"factorized"`` (see the
            module docstring for what each samples and when it is exact).

    Standalone the kernel samples the RBM site only: other latent sites must be conditioned
    on, or the kernel used as a block of :class:`numpyro.infer.Gibbs`. Deterministic sites
    are recorded.

    Example::

        def model():
            numpyro.sample("v", nrbm.RBM(params))

        mcmc = MCMC(RBMGibbs(model), num_warmup=200, num_samples=1000, num_chains=4,
                    chain_method="vectorized")
        mcmc.run(jax.random.key(0), extra_fields=("free_energy", "h"))
    """

    sample_field = "z"

    def __init__(
        self, model, *, site: str | None = None, num_sweeps: int = 1, update: str = "auto"
    ):
        if model is None or not callable(model):
            raise ValueError("RBMGibbs needs a NumPyro model (a callable)")
        if not isinstance(num_sweeps, int) or num_sweeps < 1:
            raise ValueError(f"num_sweeps must be a positive integer, got {num_sweeps!r}")
        if update not in _UPDATES:
            raise ValueError(f"update must be one of {_UPDATES}, got {update!r}")
        self._model = model
        self._site = site
        self._num_sweeps = num_sweeps
        self._update = update
        self._reset()

    def _reset(self):
        # static metadata resolved at `init`
        self._site_name = None
        self._mode = None
        self._has_deterministic = False
        self._sample_fn = None
        self._potts_q = None  # q of a Potts site (integer sequences), else None

    @property
    def model(self):
        return self._model

    @property
    def site(self) -> str | None:
        """The RBM site's name (known after ``init``)."""
        return self._site_name or self._site

    @property
    def update(self) -> str | None:
        """The update actually used (``"auto"`` resolved at ``init``)."""
        return self._mode

    @property
    def default_fields(self):
        # potential_energy by default, so that az.from_numpyro shows an ``lp`` trace
        return ("z", "potential_energy")

    # --- model evaluation ---------------------------------------------------------------

    def _trace(self, v, model_args, model_kwargs):
        model = substitute(seed(self._model, jax.random.key(0)), data={self._site_name: v})
        return trace(model).get_trace(*model_args, **(model_kwargs or {}))

    def _site_info(self, tr):
        fn = tr[self._site_name]["fn"]
        return fn.params, getattr(fn, "clamp_mask", None), getattr(fn, "clamp_values", None)

    def _log_likelihood(self, tr):
        """Summed log density of every sample site but the RBM site (as numpyro's
        ``log_density`` does, with scales and masks; the RBM's own log Z is never computed)."""
        total = jnp.zeros(())
        for name, s in tr.items():
            if s["type"] != "sample" or name == self._site_name:
                continue
            if s["intermediates"]:
                lp = s["fn"].log_prob(s["value"], s["intermediates"])
            else:
                lp = s["fn"].log_prob(s["value"])
            if s["scale"] is not None:
                lp = s["scale"] * lp
            total = total + jnp.sum(lp)
        return total

    def _evaluate(self, v, model_args, model_kwargs):
        """``(params, mask, values, free_energy, log_likelihood)`` at ``v``."""
        tr = self._trace(v, model_args, model_kwargs)
        params, mask, values = self._site_info(tr)
        fe = free_energy(params, _to_layer(params, v))
        fe = jnp.sum(fe) if jnp.ndim(fe) else fe
        ll = jnp.zeros((), fe.dtype) if self._mode == "prior" else self._log_likelihood(tr)
        return params, mask, values, fe, ll.astype(fe.dtype)

    def _field_offset(self, params, v, model_args, model_kwargs):
        r""":math:`\Delta_i / (b - a)` from ``n + 1`` vmapped evaluations of the likelihood."""
        low, high = params.visible_units.values
        size = v.size
        base = jnp.full((size,), low, v.dtype)
        flips = jnp.concatenate([base[None], base + (high - low) * jnp.eye(size, dtype=v.dtype)])

        def loglik(flat):
            return self._log_likelihood(
                self._trace(flat.reshape(v.shape), model_args, model_kwargs)
            )

        ll = jax.vmap(loglik)(flips)
        return ((ll[1:] - ll[0]) / (high - low)).reshape(v.shape).astype(v.dtype)

    # --- MCMCKernel interface -----------------------------------------------------------

    def _prototype(self, rng_key, model_args, model_kwargs):
        """A trace with uniform random RBM states (cheap, never enumerates) and
        ``init_to_sample`` values elsewhere."""

        def start(site):
            if _is_rbm_site(site):
                params = site["fn"].params
                key, shape = site["kwargs"]["rng_key"], site["fn"].shape()
                return _random_state(key, params, shape, params.weights.dtype)
            return init_to_sample(site)

        model = substitute(seed(self._model, rng_key), substitute_fn=start)
        return trace(model).get_trace(*model_args, **(model_kwargs or {}))

    def _setup(self, rng_key, model_args, model_kwargs):
        """Finds the RBM site and resolves the update from a prototype trace."""
        tr = self._prototype(rng_key, model_args, model_kwargs)
        rbm_sites = [name for name, s in tr.items() if _is_rbm_site(s) and not s["is_observed"]]
        if self._site is not None:
            if self._site not in rbm_sites:
                raise ValueError(
                    f"site {self._site!r} is not a latent RBM sample site of the model; "
                    f"RBM sites found: {rbm_sites}"
                )
            name = self._site
        elif len(rbm_sites) == 1:
            name = rbm_sites[0]
        else:
            raise ValueError(
                f"RBMGibbs needs one latent RBM site (numpyro.sample(name, numpyro_rbm.RBM(...)))"
                f", found {rbm_sites}; pass site=... to choose"
            )
        others = [
            n
            for n, s in tr.items()
            if s["type"] == "sample"
            and not s["is_observed"]
            and n != name
            and s["infer"].get("enumerate") != "parallel"
        ]
        if others:
            raise ValueError(
                f"RBMGibbs samples only the RBM site {name!r}, but the model has other latent "
                f"sites {others}. Condition on them, or compose kernels: "
                f"numpyro.infer.Gibbs([(RBMGibbs(model), [{name!r}]), (NUTS(model), None)])"
            )
        has_density = any(s["type"] == "sample" and n != name for n, s in tr.items())
        units = tr[name]["fn"].params.visible_units
        if self._update == "factorized" and units.values is None:
            raise ValueError(
                f"update='factorized' needs two-state visible units (bernoulli or spin); the "
                f"RBM site {name!r} has {units.spec} visible units. Use update='metropolis' "
                "(exact for any likelihood) or 'auto'"
            )
        self._site_name = name
        self._potts_q = units.q if isinstance(units, Potts) else None
        self._mode = self._update
        if self._update == "auto":
            self._mode = "metropolis" if has_density else "prior"
        self._has_deterministic = any(s["type"] == "deterministic" for s in tr.values())
        return tr[name]["value"]

    def _init_one(self, rng_key, v, model_args, model_kwargs):
        params, mask, values = self._site_info(self._trace(v, model_args, model_kwargs))
        if _is_potts(params):  # integer sequences stay integer (the site's support)
            v = jnp.asarray(v).astype(jnp.int32)
        else:
            v = apply_clamp(jnp.asarray(v, params.weights.dtype), mask, values)
        params, mask, values, fe, ll = self._evaluate(v, model_args, model_kwargs)
        h = jnp.zeros(jnp.shape(v)[:-1] + (params.n_hidden,), params.weights.dtype)
        one = jnp.ones((), fe.dtype)
        return RBMGibbsState(
            {self._site_name: v}, h, fe, ll, fe - ll, one, one, jnp.zeros((), jnp.int32), rng_key
        )

    def init(self, rng_key, num_warmup, init_params=None, model_args=(), model_kwargs=None):
        vectorized = not is_prng_key(rng_key)
        key0 = rng_key[0] if vectorized else rng_key
        prototype = self._setup(jax.random.fold_in(key0, 1), model_args, model_kwargs)
        name = self._site_name
        if init_params is not None and name in init_params:
            v0 = init_params[name]
        elif vectorized:
            v0 = jax.vmap(lambda k: self._prototype(k, model_args, model_kwargs)[name]["value"])(
                rng_key
            )
        else:
            v0 = prototype

        q = self._potts_q
        what = "an integer sequence of " if q else ""

        def check(v):
            if jnp.shape(v)[-1:] != jnp.shape(prototype)[-1:]:
                raise ValueError(
                    f"init_params[{name!r}] has shape {jnp.shape(v)}; expected {what}shape "
                    f"{jnp.shape(prototype)} (with a leading num_chains axis when vectorized)"
                )
            if q and not isinstance(v, jax.core.Tracer):
                x = np.asarray(v)
                if not np.all((x >= 0) & (x < q) & (x == np.round(x))):
                    raise ValueError(
                        f"init_params[{name!r}] must hold Potts states, integers in 0 .. {q - 1}"
                        " (the site value is the integer sequence, not the one-hot layer)"
                    )

        check(v0)
        sample_one = self._sample_one
        if vectorized:
            keys = jax.vmap(lambda k: jax.random.fold_in(k, 2))(rng_key)
            state = jax.vmap(lambda k, v: self._init_one(k, v, model_args, model_kwargs))(keys, v0)
            self._sample_fn = jax.vmap(sample_one, in_axes=(0, None, None))
        else:
            state = self._init_one(jax.random.fold_in(rng_key, 2), v0, model_args, model_kwargs)
            self._sample_fn = sample_one
        return state

    def _sample_one(self, state: RBMGibbsState, model_args, model_kwargs) -> RBMGibbsState:
        key, key_sweep, key_accept = jax.random.split(state.rng_key, 3)
        v = state.z[self._site_name]
        params, mask, values = self._site_info(self._trace(v, model_args, model_kwargs))
        if self._mode == "factorized":
            offset = self._field_offset(params, v, model_args, model_kwargs)
            v_new, h_new = block_gibbs(
                key_sweep,
                params,
                v,
                self._num_sweeps,
                mask=mask,
                values=values,
                field_offset=offset,
            )
            _, _, _, fe, ll = self._evaluate(v_new, model_args, model_kwargs)
            accept_prob = jnp.ones((), fe.dtype)
        else:
            layer, h_new = block_gibbs(
                key_sweep, params, _to_layer(params, v), self._num_sweeps, mask=mask, values=values
            )
            v_new = _from_layer(params, layer, v)
            _, _, _, fe, ll = self._evaluate(v_new, model_args, model_kwargs)
            if self._mode == "metropolis":
                log_ratio = ll - state.log_likelihood
                log_ratio = jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)
                accept_prob = jnp.exp(jnp.minimum(log_ratio, 0.0))
                accept = jax.random.exponential(key_accept, dtype=fe.dtype) > -log_ratio
                v_new = jnp.where(accept, v_new, v)
                h_new = jnp.where(accept, h_new, state.h)
                fe = jnp.where(accept, fe, state.free_energy)
                ll = jnp.where(accept, ll, state.log_likelihood)
            else:
                accept_prob = jnp.ones((), fe.dtype)
        i = state.i + 1
        mean_accept = state.mean_accept_prob + (accept_prob - state.mean_accept_prob) / i
        return RBMGibbsState(
            {self._site_name: v_new}, h_new, fe, ll, fe - ll, accept_prob, mean_accept, i, key
        )

    def sample(self, state, model_args, model_kwargs):
        """Runs ``num_sweeps`` sweeps (one MCMC step) and returns the next state."""
        assert self._sample_fn is not None, "`init` must be called before `sample`"
        return self._sample_fn(state, model_args, model_kwargs)

    def refresh(self, state, model_args, model_kwargs):
        """Recomputes ``free_energy`` and ``log_likelihood`` at the current ``v`` under new
        conditioning values (used by :class:`numpyro.infer.Gibbs`)."""
        _, _, _, fe, ll = self._evaluate(state.z[self._site_name], model_args, model_kwargs)
        return state._replace(free_energy=fe, log_likelihood=ll, potential_energy=fe - ll)

    def wrap_model(self, wrapper):
        kernel = copy.copy(self)
        kernel._model = wrapper(self._model)
        kernel._reset()
        return kernel

    def get_constrain_fn(self, model_args, model_kwargs):
        """Identity: visible states are already constrained."""
        return identity

    def postprocess_fn(self, model_args, model_kwargs):
        """Adds the model's deterministic sites, replaying the model at each draw."""
        if not self._has_deterministic:
            return identity

        def fn(z):
            tr = self._trace(z[self._site_name], model_args, model_kwargs)
            det = {n: s["value"] for n, s in tr.items() if s["type"] == "deterministic"}
            return {**z, **det}

        return fn

    def get_diagnostics_str(self, state):
        if self._mode == "metropolis":
            return f"acc. prob={float(state.mean_accept_prob):.2f}"
        return ""

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_sample_fn"] = None
        return state
