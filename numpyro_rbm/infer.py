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

**Batches.** The site may hold one visible vector per example: an RBM inside
``numpyro.plate``, made with ``.expand([n]).to_event(1)``, or with batched parameters; the
kernel looks through NumPyro's ``ExpandedDistribution`` and ``Independent`` wrappers, and one
sweep updates every example. With plates, ``"metropolis"`` accepts per example: the sites
inside every plate of the RBM site give :math:`L_n(v_n)`, and :math:`v'_n` replaces
:math:`v_n` with probability :math:`\min\{1, L_n(v'_n) / L_n(v_n)\}`, a product kernel
reversible with respect to :math:`\prod_n p(v_n) L_n(v_n)`. The remaining sites
:math:`S(v)` (outside some plate) are then accepted jointly with probability
:math:`\min\{1, S(v'') / S(v)\}` from the per-example result :math:`v''`, exact by the same
argument as above with that product kernel as the proposal. Without plates the batch is
accepted jointly.

**Enumerated sites.** Discrete latent sites marked ``infer={"enumerate": ...}`` are summed
out of the likelihood exactly, :math:`L(v) = \sum_z p(z)\, p(y \mid v, z)`: the model is
evaluated (vmapped) at every joint value of those sites, over every element of their plates,
and the values combined with ``logsumexp``; more than :data:`MAX_ENUMERATED_VALUES` joint
values, an enumerated site before the RBM site, a deterministic site after one, and
``"factorized"`` (a mixture does not factorise over units) are refused with an error.

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
import numpy as np
from numpyro.distributions import ExpandedDistribution, Independent
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

#: The most joint values of a model's enumerated sites that :class:`RBMGibbs` sums over
#: (each is one evaluation of the model's likelihood per MCMC step).
MAX_ENUMERATED_VALUES = 1024


class RBMGibbsState(NamedTuple):
    """State of :class:`RBMGibbs`; every field can be requested as an ``extra_field``.

    - ``z``: ``{site: v}``, the current visible state of the RBM site.
    - ``h``: the hidden state the current ``v`` was drawn from (zeros before the first step).
    - ``free_energy``: :math:`F(v)` of the site's RBM (with clamping, of the full RBM).
    - ``log_likelihood``: :math:`\\log L(v)`, the summed log density of every other site of
      the model at ``v`` (0 in ``"prior"`` mode, where it is not computed), with the
      model's enumerated sites summed out.
    - ``example_log_likelihood``: the part of ``log_likelihood`` from the sites inside every
      plate of the RBM site, per example (shape: the plate sizes at their batch axes, ones
      elsewhere); the whole of it, shape ``()``, when the RBM site is in no plate or the
      update is not ``"metropolis"``.
    - ``potential_energy``: :math:`F(v) - \\log L(v)`, the negative log posterior of ``v`` up
      to a constant (ArviZ shows its negative as ``lp``).
    - ``accept_prob``: Metropolis acceptance probability of the last step (1 for exact
      updates; with per-example acceptance, the mean over the examples, times the joint
      step's probability when there are sites outside the plates); ``mean_accept_prob``: its
      running mean.
    - ``i``: the iteration counter; ``rng_key``: the key for the next step.
    """

    z: dict
    h: jax.Array
    free_energy: jax.Array
    log_likelihood: jax.Array
    example_log_likelihood: jax.Array
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


def _rbm_of(fn):
    """The RBM (or clamped RBM) distribution under the batch wrappers of ``numpyro.plate``,
    ``.expand`` and ``.to_event``, or ``None`` when ``fn`` is not one."""
    while isinstance(fn, (ExpandedDistribution, Independent)):
        fn = fn.base_dist
    return fn if isinstance(getattr(fn, "params", None), RBMParams) else None


def _is_rbm_site(site) -> bool:
    return site["type"] == "sample" and _rbm_of(site["fn"]) is not None


def _site_info(fn):
    """``(params, mask, values)`` of an RBM site's distribution (no clamp: ``None``)."""
    fn = _rbm_of(fn)
    return fn.params, getattr(fn, "clamp_mask", None), getattr(fn, "clamp_values", None)


def _random_state(key, params: RBMParams, shape):
    """A random site value of ``shape`` from the unit type's random layer (cheap, never
    enumerates): uniform for two-state and Potts units, a draw from :math:`p(v \\mid h = 0)`
    for Gaussian units."""
    field = jnp.broadcast_to(params.visible_bias, tuple(shape[:-1]) + (params.n_visible,))
    return params.visible_units.from_layer(params.visible_layer.random_layer(key, field))


def _site_log_prob(s):
    """A sample site's log density (with its scale), of the site's batch shape."""
    if s["intermediates"]:
        lp = s["fn"].log_prob(s["value"], s["intermediates"])
    else:
        lp = s["fn"].log_prob(s["value"])
    return lp if s["scale"] is None else s["scale"] * lp


def _log_likelihood(tr, site):
    """Summed log density of every sample site but the RBM site (as numpyro's
    ``log_density`` does, with scales; the RBM's own log Z is never computed)."""
    total = jnp.zeros(())
    for name, s in tr.items():
        if s["type"] == "sample" and name != site:
            total = total + jnp.sum(_site_log_prob(s))
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
    """What ``init`` resolves from the model, fixed for the kernel's lifetime.

    ``example_shape``: the RBM site's batch shape with ones outside its plates, the shape of
    the per-example acceptance (``()``: one joint acceptance); ``shared``: sites with a
    density outside some plate of the RBM site (their factor is accepted jointly, after the
    per-example step); ``enumerated``: discrete sites summed out of the likelihood."""

    site: str
    mode: str
    num_sweeps: int
    units: UnitType
    has_deterministic: bool
    example_shape: tuple[int, ...] = ()
    shared: tuple[str, ...] = ()
    enumerated: tuple[str, ...] = ()


def _trace_at(model, cfg: _Resolved, v, model_args, model_kwargs, data=None):
    """The model's trace with the RBM site at ``v`` (and the sites in ``data`` at theirs)."""
    model = substitute(seed(model, jax.random.key(0)), data={**(data or {}), cfg.site: v})
    return trace(model).get_trace(*model_args, **(model_kwargs or {}))


def _sweep_trace(model, cfg: _Resolved, sweep, model_args, model_kwargs):
    """The model's trace with the RBM site at ``sweep(site_distribution)``, and what the
    sweep returned besides the value."""
    handler = _SweepAt(seed(model, jax.random.key(0)), cfg.site, sweep)
    tr = trace(handler).get_trace(*model_args, **(model_kwargs or {}))
    return tr, handler.out


def _per_example(lp, example_shape):
    """``lp`` summed over every axis but the RBM site's plate axes, shaped ``example_shape``
    (batch axes align from the right, as plates place them)."""
    lp = jnp.asarray(lp)
    n = max(lp.ndim, len(example_shape))
    lp = jnp.reshape(lp, (1,) * (n - lp.ndim) + lp.shape)
    keep = [n - len(example_shape) + i for i, size in enumerate(example_shape) if size > 1]
    lp = jnp.sum(lp, axis=tuple(a for a in range(n) if a not in keep), keepdims=True)
    return jnp.broadcast_to(lp.reshape(lp.shape[n - len(example_shape) :]), example_shape)


def _split_log_likelihood(tr, cfg: _Resolved):
    """``(per_example, shared)``: the other sites' log density, split into the sites inside
    every plate of the RBM site (per example) and the rest (summed)."""
    example = jnp.zeros(cfg.example_shape)
    shared = jnp.zeros(())
    for name, s in tr.items():
        if s["type"] != "sample" or name == cfg.site:
            continue
        if name in cfg.shared:
            shared = shared + jnp.sum(_site_log_prob(s))
        else:
            example = example + _per_example(_site_log_prob(s), cfg.example_shape)
    return example, shared


def _enumerated_values(tr, names):
    r"""Every joint value of the enumerated sites ``names``, as ``{name: (J, *site shape)}``:
    the product of the sites' supports over every element of their batch shapes (the sites
    are read from the trace ``tr``)."""
    supports, sizes = [], []
    for name in names:
        fn = tr[name]["fn"]
        support = fn.enumerate_support(expand=True)  # (K, *batch, *event)
        m = int(np.prod(fn.batch_shape, dtype=np.int64))
        supports.append((name, support.reshape((support.shape[0], m) + fn.event_shape), fn))
        sizes += [support.shape[0]] * m
    index = np.indices(sizes).reshape(len(sizes), -1)  # (elements, J): one joint value a column
    values, start = {}, 0
    for name, support, fn in supports:
        m = support.shape[1]
        picked = support[index[start : start + m].T, np.arange(m)]  # (J, m, *event)
        values[name] = picked.reshape((-1,) + fn.batch_shape + fn.event_shape)
        start += m
    return values


def _marginal_log_likelihood(model, cfg: _Resolved, tr, v, model_args, model_kwargs):
    r""":math:`\log \sum_z L(v, z)`: the likelihood with the enumerated sites :math:`z` summed
    out, from one vmapped evaluation of the model per joint value of :math:`z`."""

    def loglik(values):
        return _log_likelihood(
            _trace_at(model, cfg, v, model_args, model_kwargs, values), cfg.site
        )

    lls = jax.vmap(loglik)(_enumerated_values(tr, cfg.enumerated))
    return jax.scipy.special.logsumexp(lls)


def _likelihood(model, cfg: _Resolved, tr, v, model_args, model_kwargs):
    """``(per_example, shared)`` log-likelihood at ``v``, the state of the trace ``tr``
    (enumerated sites summed out; all of it per example then, with one joint example)."""
    if cfg.enumerated:
        ll = _marginal_log_likelihood(model, cfg, tr, v, model_args, model_kwargs)
        return ll, jnp.zeros((), ll.dtype)
    return _split_log_likelihood(tr, cfg)


def _total_free_energy(params, layer):
    """:math:`F(v)` summed over a batch of visible states (or of RBMs)."""
    fe = free_energy(params, layer)
    return jnp.sum(fe) if jnp.ndim(fe) else fe


def _energies(model, cfg: _Resolved, tr, params, layer, model_args, model_kwargs):
    """``(free_energy, log_likelihood, example_log_likelihood)`` of the state ``layer`` of a
    trace ``tr``: the free energy summed over a batch, the other sites' log density (zero for
    the prior) and its per-example part."""
    fe = _total_free_energy(params, layer)
    if cfg.mode == "prior":
        zero = jnp.zeros((), fe.dtype)
        return fe, zero, zero
    v = tr[cfg.site]["value"]
    example, shared = _likelihood(model, cfg, tr, v, model_args, model_kwargs)
    return fe, (jnp.sum(example) + shared).astype(fe.dtype), example.astype(fe.dtype)


def _evaluate(model, cfg: _Resolved, v, model_args, model_kwargs):
    """``(free_energy, log_likelihood, example_log_likelihood)`` at the site value ``v``."""
    tr = _trace_at(model, cfg, v, model_args, model_kwargs)
    params = _site_info(tr[cfg.site]["fn"])[0]
    layer = cfg.units.to_layer(v, params.weights.dtype)
    return _energies(model, cfg, tr, params, layer, model_args, model_kwargs)


def _field_offset(model, cfg: _Resolved, v, model_args, model_kwargs):
    r""":math:`\Delta_i / (b - a)` from ``n + 1`` vmapped evaluations of the likelihood
    (:math:`n` the number of units of the whole batch of examples)."""
    low, high = cfg.units.values
    size = v.size
    base = jnp.full((size,), low, v.dtype)
    flips = jnp.concatenate([base[None], base + (high - low) * jnp.eye(size, dtype=v.dtype)])

    def loglik(flat):
        tr = _trace_at(model, cfg, flat.reshape(v.shape), model_args, model_kwargs)
        return _log_likelihood(tr, cfg.site)

    ll = jax.vmap(loglik)(flips)
    return ((ll[1:] - ll[0]) / (high - low)).reshape(v.shape).astype(v.dtype)


def _accept(key, log_ratio, shape):
    """Metropolis decisions of ``shape`` and their probabilities :math:`\\min(1, e^r)` (a NaN
    ratio rejects)."""
    log_ratio = jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)
    accept = jax.random.exponential(key, shape, dtype=log_ratio.dtype) > -log_ratio
    return accept, jnp.exp(jnp.minimum(log_ratio, 0.0))


def _select(accept, new, old):
    """``new`` where ``accept`` (batch axes aligned from the left), ``old`` elsewhere."""
    accept = jnp.reshape(accept, jnp.shape(accept) + (1,) * (jnp.ndim(new) - jnp.ndim(accept)))
    return jnp.where(accept, new, old)


def _metropolis(model, cfg: _Resolved, state, proposal, key, model_args, model_kwargs):
    r"""Accept or reject the proposal ``(tr, v', h')`` of the sweeps.

    First per example: :math:`v'_n` replaces :math:`v_n` with probability
    :math:`\min\{1, L_n(v'_n) / L_n(v_n)\}`, :math:`L_n` the sites inside the RBM site's plates
    (one joint example without plates). That product kernel is reversible with respect to
    :math:`\prod_n p(v_n) L_n(v_n)`, so it is an exact proposal for the second step, which
    accepts the whole new state with probability :math:`\min\{1, S(v'') / S(v)\}`, :math:`S`
    the shared sites (outside some plate; only when the model has them).

    Returns ``(v, h, log_likelihood, example_log_likelihood, accept_prob)``.
    """
    tr, v_prop, h_prop = proposal
    v, dtype = state.z[cfg.site], state.free_energy.dtype
    key_example, key_shared = jax.random.split(key) if cfg.shared else (key, None)
    example, _ = _likelihood(model, cfg, tr, v_prop, model_args, model_kwargs)
    example = example.astype(dtype)
    old = state.example_log_likelihood
    accept, accept_prob = _accept(key_example, example - old, cfg.example_shape)
    v_new, h_new = _select(accept, v_prop, v), _select(accept, h_prop, state.h)
    example = jnp.where(accept, example, old)
    accept_prob = jnp.mean(accept_prob)
    if not cfg.shared:
        return v_new, h_new, jnp.sum(example), example, accept_prob
    shared_old = state.log_likelihood - jnp.sum(old)
    _, shared = _split_log_likelihood(_trace_at(model, cfg, v_new, model_args, model_kwargs), cfg)
    joint, joint_prob = _accept(key_shared, shared.astype(dtype) - shared_old, ())
    example = jnp.where(joint, example, old)
    ll = jnp.where(joint, jnp.sum(example) + shared, state.log_likelihood)
    return (
        jnp.where(joint, v_new, v), jnp.where(joint, h_new, state.h), ll, example,
        accept_prob * joint_prob,
    )  # fmt: skip


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
    if cfg.mode == "metropolis":
        proposal = (tr, tr[cfg.site]["value"], h_new)
        v_new, h_new, ll, example, accept_prob = _metropolis(
            model, cfg, state, proposal, key_accept, model_args, model_kwargs
        )
        fe = _total_free_energy(params, cfg.units.to_layer(v_new, params.weights.dtype))
    else:
        v_new = tr[cfg.site]["value"]
        fe, ll, example = _energies(model, cfg, tr, params, layer, model_args, model_kwargs)
        accept_prob = jnp.ones((), fe.dtype)
    i = state.i + 1
    mean_accept = state.mean_accept_prob + (accept_prob - state.mean_accept_prob) / i
    return RBMGibbsState(
        {cfg.site: v_new}, h_new, fe, ll, example, fe - ll, accept_prob, mean_accept, i, key
    )


def _check_scale(site):
    """Refuses a scaled RBM site (a subsampled plate, ``numpyro.handlers.scale``): the chain
    state is the whole site, and a scaled prior is not an RBM."""
    scale = site["scale"]
    if scale is not None and not (np.ndim(scale) == 0 and float(scale) == 1.0):
        raise ValueError(
            f"RBMGibbs cannot sample the RBM site {site['name']!r}: it has a log-density scale "
            "(from a subsampled plate or numpyro.handlers.scale), and the kernel samples every "
            "example of the site from the unscaled RBM. Use the full plate "
            "(numpyro.plate(name, size) without subsample_size) and no scale handler"
        )


def _check_enumerated(tr, name, enumerated, update):
    """Refuses enumerated sites the kernel cannot sum out exactly (see the class docstring)."""
    if not enumerated:
        return
    order = list(tr)
    count = 1
    for n in enumerated:
        fn = tr[n]["fn"]
        if not fn.has_enumerate_support:
            raise ValueError(
                f"site {n!r} is marked for enumeration but {type(fn).__name__} has no "
                "enumerable support; remove infer={'enumerate': ...} from it, or condition on it"
            )
        if order.index(n) < order.index(name):
            raise ValueError(
                f"enumerated site {n!r} comes before the RBM site {name!r}: it could change "
                "the RBM itself, and RBMGibbs sums enumerated sites out of the likelihood only. "
                f"Sample {n!r} after {name!r}, or write the mixture out by hand (e.g. a "
                "numpyro.factor with jax.scipy.special.logsumexp over its values)"
            )
        size = fn.enumerate_support(expand=False).shape[0]
        count *= size ** int(np.prod(fn.batch_shape, dtype=np.int64))
    if count > MAX_ENUMERATED_VALUES:
        raise ValueError(
            f"the enumerated sites {list(enumerated)} have {count} joint values (every element "
            f"of a plate counts), more than RBMGibbs sums over ({MAX_ENUMERATED_VALUES}, "
            "numpyro_rbm.infer.MAX_ENUMERATED_VALUES; one model evaluation each per step). "
            "Marginalise them in the model instead (e.g. a numpyro.factor with "
            "jax.scipy.special.logsumexp over each example's values, or "
            "numpyro.distributions.MixtureSameFamily)"
        )
    first = min(order.index(n) for n in enumerated)
    late = [n for n in order[first:] if tr[n]["type"] == "deterministic"]
    if late:
        raise ValueError(
            f"deterministic sites {late} come after the enumerated site {order[first]!r} and "
            "may depend on it; RBMGibbs sums enumerated sites out and never draws them, so it "
            "cannot record these. Compute them before the enumerated site, or from the samples "
            f"of {name!r}"
        )
    if update == "factorized":
        raise ValueError(
            f"update='factorized' cannot be used with enumerated sites {list(enumerated)}: the "
            "likelihood summed over them is a mixture, which does not factorise over visible "
            "units. Use update='metropolis' (or 'auto')"
        )


def _plate_split(tr, name):
    """``(example_shape, shared)`` for per-example acceptance: the RBM site's batch shape with
    ones outside its plates, and the sites with a density that are not inside every one of
    those plates."""
    frames = [f for f in tr[name]["cond_indep_stack"] if f.dim is not None]
    batch_shape = tuple(tr[name]["fn"].batch_shape)
    if not frames:
        return (), ()
    dims = {len(batch_shape) + f.dim for f in frames}
    example_shape = tuple(size if i in dims else 1 for i, size in enumerate(batch_shape))
    names = {f.name for f in frames}
    shared = tuple(
        n
        for n, s in tr.items()
        if s["type"] == "sample"
        and n != name
        and not names <= {f.name for f in s["cond_indep_stack"]}
    )
    return example_shape, shared


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
    on, summed out (discrete sites marked ``infer={"enumerate": "parallel"}``), or sampled
    by another block of :class:`numpyro.infer.Gibbs`. Deterministic sites are recorded.

    The RBM site may be a batch of examples, each its own chain state: inside
    ``numpyro.plate``, ``RBM(...).expand([n]).to_event(1)``, or an RBM (or ``ClampedRBM``)
    with batched parameters, in every update mode. ``"metropolis"`` accepts each example on
    the sites inside its plates, then the whole batch on the sites outside them; without
    plates, the batch jointly. Enumerated discrete sites are summed out of the likelihood
    exactly (at most :data:`MAX_ENUMERATED_VALUES` joint values). See the module docstring
    and ``docs/kernel.md``. ``init`` resolves the site, the update and the unit type into a frozen
    configuration; every step is then the pure function of that configuration, the model and
    the state (one trace of the model per step).

    Example::

        def model():
            numpyro.sample("v", nrbm.RBM(params))

        mcmc = MCMC(RBMGibbs(model), num_warmup=200, num_samples=1000, num_chains=4,
                    chain_method="vectorized")
        mcmc.run(jax.random.key(0), extra_fields=("free_energy", "h"))

        def denoise(y):                       # many images, one shared flip rate
            eps = numpyro.sample("eps", dist.Beta(1.0, 4.0))
            with numpyro.plate("images", y.shape[0]):
                v = numpyro.sample("v", nrbm.RBM(params, log_z=None))
                flip = jnp.where(v == 1, 1 - eps, eps)
                numpyro.sample("y", dist.Bernoulli(probs=flip).to_event(1), obs=y)

        kernel = Gibbs([(RBMGibbs(denoise), ["v"]), (NUTS(denoise), None)])
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
                    site["kwargs"]["rng_key"], _site_info(site["fn"])[0], site["fn"].shape()
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
        _check_scale(tr[name])
        latent = [
            n
            for n, s in tr.items()
            if s["type"] == "sample" and n != name and not s["is_observed"]
        ]
        enumerated = tuple(n for n in latent if tr[n]["infer"].get("enumerate"))
        others = [n for n in latent if n not in enumerated]
        if others:
            raise ValueError(
                f"RBMGibbs samples only the RBM site {name!r}, but the model has other latent "
                f"sites {others}. Condition on them, or compose kernels: "
                f"numpyro.infer.Gibbs([(RBMGibbs(model), [{name!r}]), (NUTS(model), None)])"
            )
        _check_enumerated(tr, name, enumerated, self._update)
        units = _site_info(tr[name]["fn"])[0].visible_units
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
        example_shape, shared = (), ()
        if mode == "metropolis" and not enumerated:
            example_shape, shared = _plate_split(tr, name)
        return _Resolved(
            name, mode, self._num_sweeps, units, has_deterministic, example_shape, shared,
            enumerated,
        )  # fmt: skip

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
        fe, ll, example = _evaluate(self._model, cfg, v, model_args, model_kwargs)
        h = jnp.zeros(jnp.shape(layer)[:-1] + (params.n_hidden,), params.weights.dtype)
        one = jnp.ones((), fe.dtype)
        return RBMGibbsState(
            {cfg.site: v}, h, fe, ll, example, fe - ll, one, one, jnp.zeros((), jnp.int32),
            rng_key,
        )  # fmt: skip

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
        fe, ll, example = _evaluate(self._model, cfg, state.z[cfg.site], model_args, model_kwargs)
        return state._replace(
            free_energy=fe, log_likelihood=ll, example_log_likelihood=example,
            potential_energy=fe - ll,
        )  # fmt: skip

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
