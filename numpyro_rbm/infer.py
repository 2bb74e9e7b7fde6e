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

**Site values and layers.** The chain state is the site's value, which the visible unit type
maps to the layer the core works on (:meth:`~numpyro_rbm.units.UnitType.to_layer`): for Potts
units (:class:`~numpyro_rbm.units.Potts`) the integer sequence :math:`x \in \{0, \dots,
q-1\}^L` and its one-hot layer :math:`v_{ia} = \mathbb 1[x_i = a]`, where
:math:`v \sim p(v \mid h)` draws each site from its softmax. ``"prior"`` and ``"metropolis"`` are
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
import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
from numpyro.handlers import seed, substitute, trace
from numpyro.infer.initialization import init_to_sample
from numpyro.infer.mcmc import MCMCKernel
from numpyro.primitives import Messenger
from numpyro.util import identity, is_prng_key

from .core import RBMParams, apply_clamp, free_energy
from .kernels import gibbs
from .units import UnitType

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
    r"""``num_sweeps`` block-Gibbs sweeps from ``v`` (:func:`numpyro_rbm.kernels.gibbs`).

    Each sweep draws :math:`h \sim p(h \mid v)` then :math:`v \sim p(v \mid h)` with the visible
    field shifted by ``field_offset`` (a per-unit likelihood term, see the module docstring),
    and resets clamped units (``mask`` True) to ``values``.

    Returns:
        ``(v, h)``: the final visible state and the hidden state it was drawn from.
    """
    return gibbs(key, params, v, num_sweeps, mask=mask, values=values, visible_offset=field_offset)


# --- the model, read and evaluated -------------------------------------------------------------


def _is_rbm_site(site) -> bool:
    return site["type"] == "sample" and isinstance(getattr(site["fn"], "params", None), RBMParams)


def _site_info(fn):
    """``(params, mask, values)`` of an RBM site's distribution (no clamp: ``None``)."""
    return fn.params, getattr(fn, "clamp_mask", None), getattr(fn, "clamp_values", None)


def _random_state(key, params: RBMParams, shape):
    """A random site value of ``shape`` from the unit type's random layer (cheap, never
    enumerates): uniform for two-state and Potts units, a draw from :math:`p(v \\mid h = 0)`
    for Gaussian units."""
    field = jnp.broadcast_to(params.visible_bias, tuple(shape[:-1]) + (params.n_visible,))
    return params.visible_units.from_layer(params.visible_layer.random_layer(key, field))


def _log_likelihood(tr, site):
    """Summed log density of every sample site but the RBM site (as numpyro's
    ``log_density`` does, with scales; the RBM's own log Z is never computed)."""
    total = jnp.zeros(())
    for name, s in tr.items():
        if s["type"] != "sample" or name == site:
            continue
        if s["intermediates"]:
            lp = s["fn"].log_prob(s["value"], s["intermediates"])
        else:
            lp = s["fn"].log_prob(s["value"])
        if s["scale"] is not None:
            lp = s["scale"] * lp
        total = total + jnp.sum(lp)
    return total


class _SweepAt(Messenger):
    """Runs the kernel's sweeps at the RBM site, from the site's distribution, and makes their
    result the site's value: one trace of the model then gives the new state, its RBM and
    the likelihood of every other site at it."""

    def __init__(self, fn, site, sweep):
        self.site, self.sweep, self.out = site, sweep, None
        super().__init__(fn)

    def process_message(self, msg):
        if msg["type"] == "sample" and msg["name"] == self.site:
            msg["value"], self.out = self.sweep(msg["fn"])


@dataclasses.dataclass(frozen=True)
class _Resolved:
    """What ``init`` resolves from the model, fixed for the kernel's lifetime."""

    site: str
    mode: str
    num_sweeps: int
    units: UnitType
    has_deterministic: bool


def _trace_at(model, cfg: _Resolved, v, model_args, model_kwargs):
    """The model's trace with the RBM site at ``v``."""
    model = substitute(seed(model, jax.random.key(0)), data={cfg.site: v})
    return trace(model).get_trace(*model_args, **(model_kwargs or {}))


def _sweep_trace(model, cfg: _Resolved, sweep, model_args, model_kwargs):
    """The model's trace with the RBM site at ``sweep(site_distribution)``, and what the
    sweep returned besides the value."""
    handler = _SweepAt(seed(model, jax.random.key(0)), cfg.site, sweep)
    tr = trace(handler).get_trace(*model_args, **(model_kwargs or {}))
    return tr, handler.out


def _energies(cfg: _Resolved, tr, params, layer):
    """``(free_energy, log_likelihood)`` of the state ``layer`` of a trace ``tr``: the free
    energy summed over a batch of RBMs, and the other sites' log density (zero for the
    prior)."""
    fe = free_energy(params, layer)
    fe = jnp.sum(fe) if jnp.ndim(fe) else fe
    ll = jnp.zeros((), fe.dtype) if cfg.mode == "prior" else _log_likelihood(tr, cfg.site)
    return fe, ll.astype(fe.dtype)


def _evaluate(model, cfg: _Resolved, v, model_args, model_kwargs):
    """``(free_energy, log_likelihood)`` at the site value ``v``."""
    tr = _trace_at(model, cfg, v, model_args, model_kwargs)
    params = tr[cfg.site]["fn"].params
    return _energies(cfg, tr, params, cfg.units.to_layer(v, params.weights.dtype))


def _field_offset(model, cfg: _Resolved, v, model_args, model_kwargs):
    r""":math:`\Delta_i / (b - a)` from ``n + 1`` vmapped evaluations of the likelihood."""
    low, high = cfg.units.values
    size = v.size
    base = jnp.full((size,), low, v.dtype)
    flips = jnp.concatenate([base[None], base + (high - low) * jnp.eye(size, dtype=v.dtype)])

    def loglik(flat):
        tr = _trace_at(model, cfg, flat.reshape(v.shape), model_args, model_kwargs)
        return _log_likelihood(tr, cfg.site)

    ll = jax.vmap(loglik)(flips)
    return ((ll[1:] - ll[0]) / (high - low)).reshape(v.shape).astype(v.dtype)


def _step(model, cfg: _Resolved, state: RBMGibbsState, model_args, model_kwargs):
    """One MCMC step: the kernel's sweeps inside one trace of the model, then (for
    ``"metropolis"``) the accept/reject on the likelihood ratio."""
    key, key_sweep, key_accept = jax.random.split(state.rng_key, 3)
    v = state.z[cfg.site]
    offset = None
    if cfg.mode == "factorized":
        offset = _field_offset(model, cfg, v, model_args, model_kwargs)

    def sweep(fn):
        params, mask, values = _site_info(fn)
        layer = cfg.units.to_layer(v, params.weights.dtype)
        layer, h = gibbs(
            key_sweep, params, layer, cfg.num_sweeps, mask=mask, values=values,
            visible_offset=offset,
        )  # fmt: skip
        return cfg.units.from_layer(layer, v.dtype), (params, layer, h)

    tr, (params, layer, h_new) = _sweep_trace(model, cfg, sweep, model_args, model_kwargs)
    v_new = tr[cfg.site]["value"]
    fe, ll = _energies(cfg, tr, params, layer)
    accept_prob = jnp.ones((), fe.dtype)
    if cfg.mode == "metropolis":
        log_ratio = ll - state.log_likelihood
        log_ratio = jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)
        accept_prob = jnp.exp(jnp.minimum(log_ratio, 0.0))
        accept = jax.random.exponential(key_accept, dtype=fe.dtype) > -log_ratio
        v_new = jnp.where(accept, v_new, v)
        h_new = jnp.where(accept, h_new, state.h)
        fe = jnp.where(accept, fe, state.free_energy)
        ll = jnp.where(accept, ll, state.log_likelihood)
    i = state.i + 1
    mean_accept = state.mean_accept_prob + (accept_prob - state.mean_accept_prob) / i
    return RBMGibbsState(
        {cfg.site: v_new}, h_new, fe, ll, fe - ll, accept_prob, mean_accept, i, key
    )


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
    are recorded. ``init`` resolves the site, the update and the unit type into a frozen
    configuration; every step is then the pure function of that configuration, the model and
    the state (one trace of the model per step).

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
        self._config: _Resolved | None = None  # resolved at `init`
        self._sample_fn = None

    @property
    def model(self):
        return self._model

    @property
    def site(self) -> str | None:
        """The RBM site's name (known after ``init``)."""
        return self._config.site if self._config else self._site

    @property
    def update(self) -> str | None:
        """The update actually used (``"auto"`` resolved at ``init``)."""
        return self._config.mode if self._config else None

    @property
    def default_fields(self):
        # potential_energy by default, so that az.from_numpyro shows an ``lp`` trace
        return ("z", "potential_energy")

    # --- resolving the model ------------------------------------------------------------

    def _prototype(self, rng_key, model_args, model_kwargs):
        """A trace with random RBM states (cheap, never enumerates) and ``init_to_sample``
        values elsewhere."""

        def start(site):
            if _is_rbm_site(site):
                return _random_state(
                    site["kwargs"]["rng_key"], site["fn"].params, site["fn"].shape()
                )
            return init_to_sample(site)

        model = substitute(seed(self._model, rng_key), substitute_fn=start)
        return trace(model).get_trace(*model_args, **(model_kwargs or {}))

    def _find_site(self, tr) -> str:
        rbm_sites = [name for name, s in tr.items() if _is_rbm_site(s) and not s["is_observed"]]
        if self._site is not None:
            if self._site not in rbm_sites:
                raise ValueError(
                    f"site {self._site!r} is not a latent RBM sample site of the model; "
                    f"RBM sites found: {rbm_sites}"
                )
            return self._site
        if len(rbm_sites) != 1:
            raise ValueError(
                f"RBMGibbs needs one latent RBM site (numpyro.sample(name, numpyro_rbm.RBM(...)))"
                f", found {rbm_sites}; pass site=... to choose"
            )
        return rbm_sites[0]

    def _resolve(self, tr) -> _Resolved:
        """The frozen configuration, from a prototype trace."""
        name = self._find_site(tr)
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
        units = tr[name]["fn"].params.visible_units
        if self._update == "factorized" and units.values is None:
            raise ValueError(
                f"update='factorized' needs two-state visible units (bernoulli or spin); the "
                f"RBM site {name!r} has {units.spec} visible units. Use update='metropolis' "
                "(exact for any likelihood) or 'auto'"
            )
        mode = self._update
        if mode == "auto":
            has_density = any(s["type"] == "sample" and n != name for n, s in tr.items())
            mode = "metropolis" if has_density else "prior"
        has_deterministic = any(s["type"] == "deterministic" for s in tr.values())
        return _Resolved(name, mode, self._num_sweeps, units, has_deterministic)

    def _check_init(self, v, prototype):
        cfg = self._config
        what = f"init_params[{cfg.site!r}]"
        if jnp.shape(v)[-1:] != jnp.shape(prototype)[-1:]:
            raise ValueError(
                f"{what} has shape {jnp.shape(v)}; expected {cfg.units.site_noun} of shape "
                f"{jnp.shape(prototype)} (with a leading num_chains axis when vectorized)"
            )
        if not isinstance(v, jax.core.Tracer):
            cfg.units.check_site_value(v, what)

    # --- MCMCKernel interface -----------------------------------------------------------

    def _init_one(self, rng_key, v, model_args, model_kwargs):
        cfg = self._config
        tr = _trace_at(self._model, cfg, v, model_args, model_kwargs)
        params, mask, values = _site_info(tr[cfg.site]["fn"])
        layer = cfg.units.to_layer(v, params.weights.dtype)
        v = cfg.units.from_layer(apply_clamp(layer, mask, values))  # the site's own dtype
        fe, ll = _evaluate(self._model, cfg, v, model_args, model_kwargs)
        h = jnp.zeros(jnp.shape(layer)[:-1] + (params.n_hidden,), params.weights.dtype)
        one = jnp.ones((), fe.dtype)
        return RBMGibbsState(
            {cfg.site: v}, h, fe, ll, fe - ll, one, one, jnp.zeros((), jnp.int32), rng_key
        )

    def init(self, rng_key, num_warmup, init_params=None, model_args=(), model_kwargs=None):
        vectorized = not is_prng_key(rng_key)
        key0 = rng_key[0] if vectorized else rng_key
        tr = self._prototype(jax.random.fold_in(key0, 1), model_args, model_kwargs)
        self._config = self._resolve(tr)
        name = self._config.site
        prototype = tr[name]["value"]
        if init_params is not None and name in init_params:
            v0 = init_params[name]
        elif vectorized:
            v0 = jax.vmap(lambda k: self._prototype(k, model_args, model_kwargs)[name]["value"])(
                rng_key
            )
        else:
            v0 = prototype
        self._check_init(v0, prototype)
        if vectorized:
            keys = jax.vmap(lambda k: jax.random.fold_in(k, 2))(rng_key)
            state = jax.vmap(lambda k, v: self._init_one(k, v, model_args, model_kwargs))(keys, v0)
            self._sample_fn = jax.vmap(self._sample_one, in_axes=(0, None, None))
        else:
            state = self._init_one(jax.random.fold_in(rng_key, 2), v0, model_args, model_kwargs)
            self._sample_fn = self._sample_one
        return state

    def _sample_one(self, state, model_args, model_kwargs):
        return _step(self._model, self._config, state, model_args, model_kwargs)

    def sample(self, state, model_args, model_kwargs):
        """Runs ``num_sweeps`` sweeps (one MCMC step) and returns the next state."""
        assert self._sample_fn is not None, "`init` must be called before `sample`"
        return self._sample_fn(state, model_args, model_kwargs)

    def refresh(self, state, model_args, model_kwargs):
        """Recomputes ``free_energy`` and ``log_likelihood`` at the current ``v`` under new
        conditioning values (used by :class:`numpyro.infer.Gibbs`)."""
        cfg = self._config
        fe, ll = _evaluate(self._model, cfg, state.z[cfg.site], model_args, model_kwargs)
        return state._replace(free_energy=fe, log_likelihood=ll, potential_energy=fe - ll)

    def wrap_model(self, wrapper):
        kernel = copy.copy(self)
        kernel._model = wrapper(self._model)
        kernel._config = None
        kernel._sample_fn = None
        return kernel

    def get_constrain_fn(self, model_args, model_kwargs):
        """Identity: visible states are already constrained."""
        return identity

    def postprocess_fn(self, model_args, model_kwargs):
        """Adds the model's deterministic sites, replaying the model at each draw."""
        cfg = self._config
        if not cfg.has_deterministic:
            return identity

        def fn(z):
            tr = _trace_at(self._model, cfg, z[cfg.site], model_args, model_kwargs)
            det = {n: s["value"] for n, s in tr.items() if s["type"] == "deterministic"}
            return {**z, **det}

        return fn

    def get_diagnostics_str(self, state):
        if self._config is not None and self._config.mode == "metropolis":
            return f"acc. prob={float(state.mean_accept_prob):.2f}"
        return ""

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_sample_fn"] = None
        return state
