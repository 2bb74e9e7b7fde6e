r"""A drop-in replacement for :class:`sklearn.neural_network.BernoulliRBM`, trained in JAX.

:class:`BernoulliRBM` has scikit-learn's constructor, fitted attributes and methods, and its
training algorithm, update for update: stochastic maximum likelihood (PCD-1, Tieleman 2008)
with ``batch_size`` persistent hidden chains ``h_samples_``, plain SGD on the *sums* of the
sufficient statistics at step ``learning_rate / len(minibatch)``,

.. math::

    \Delta W = \frac{\eta}{n_b}\Big(\sum_{n \in b} v_n\,\sigma(c + W^\top v_n)^\top
        - \sum_{m=1}^{M} v'_m\,\sigma(c + W^\top v'_m)^\top\Big),

(likewise for the biases), weights initialised :math:`\mathcal N(0, 0.01^2)` from the same
NumPy random stream as scikit-learn's (so ``n_iter=0`` gives identical components), zero
biases, the minibatches of :func:`sklearn.utils.gen_even_slices` in data order, and inputs in
:math:`[0, 1]` used as visible probabilities in the positive phase. The gradient is
:func:`jax.grad` of the free-energy surrogate :math:`\big(\sum_n F(v_n) - \sum_m
F(\operatorname{sg}(v'_m))\big)/n_b` (see :mod:`numpyro_rbm.training`), whose gradient is the
update above: the Rao-Blackwellised statistics :math:`v\,\sigma(\cdot)^\top` that
scikit-learn writes out by hand.

What differs is where it runs: each epoch is one jit-compiled :func:`jax.lax.scan` over its
minibatches (compiled once per data shape and reused by later fits), and the random numbers
come from JAX keys drawn from ``random_state``, so the samples differ from scikit-learn's
bit for bit while following the same distributions. On top of scikit-learn's API it offers
``method="cd" | "pcd" | "pt"`` and ``k`` Gibbs sweeps per update, :meth:`log_likelihood`
(exact when the smaller layer enumerates, AIS otherwise) and :meth:`to_distribution`.

Importing this module needs scikit-learn (``pip install "numpyro-rbm[sklearn]"``); the rest
of :mod:`numpyro_rbm` does not.

References:
    * T. Tieleman, *Training restricted Boltzmann machines using approximations to the
      likelihood gradient*, ICML 2008.
    * G. E. Hinton, *Training products of experts by minimizing contrastive divergence*,
      Neural Computation 14 (2002).
    * G. Desjardins, A. Courville, Y. Bengio, P. Vincent and O. Delalleau, *Tempered Markov
      chain Monte Carlo for training of restricted Boltzmann machines*, AISTATS 2010.
    * J. Besag, *Statistical analysis of non-lattice data*, The Statistician 24 (1975).
"""

from __future__ import annotations

import contextlib
import time
from functools import partial
from numbers import Integral, Real
from typing import NamedTuple

try:
    import scipy.sparse as sp
    from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
    from sklearn.utils import check_random_state, gen_even_slices
    from sklearn.utils._param_validation import Interval, StrOptions
    from sklearn.utils.validation import check_array, check_is_fitted
except ImportError as err:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "numpyro_rbm.sklearn needs scikit-learn, an optional dependency: "
        'pip install "numpyro-rbm[sklearn]"'
    ) from err

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data
except ImportError:  # pragma: no cover - older scikit-learn

    def validate_data(estimator, X, **kwargs):
        return estimator._validate_data(X, **kwargs)


import jax
import jax.numpy as jnp
import numpy as np

from ._threefry import threefry_uniform32
from .core import RBMParams, energy, free_energy, hidden_mean, visible_mean
from .training import pt_negative

__all__ = ["BernoulliRBM"]

METHODS = ("cd", "pcd", "pt")
# Rows of dense data handled per call outside training (transform, scores, sampling): calls
# are padded up to a power of two of rows, so a few compilations serve every input size.
_ROW_CHUNK_BYTES = 16 * 2**20
# Sparse training data is densified this many bytes of minibatches at a time.
_SPARSE_CHUNK_BYTES = 32 * 2**20
# log_likelihood(method="auto") enumerates the smaller layer up to this many units.
EXACT_MAX_UNITS = 20


# --- the pure-JAX training step ---------------------------------------------------------------


class _State(NamedTuple):
    """What evolves during training (a pytree)."""

    params: RBMParams
    #: Persistent hidden chains (PCD), or the hidden samples of the last negative particles.
    h_samples: jax.Array
    #: Parallel-tempering replicas ``(T, batch_size, n_features)`` (empty otherwise).
    replicas: jax.Array
    key: jax.Array


def _bernoulli(u, p):
    r""":math:`x = \mathbb{1}[u < p] \sim \mathrm{Bernoulli}(p)` for uniforms ``u``."""
    return (u < p).astype(p.dtype)


def _uniforms(key, shape):
    """*float32* uniforms whatever the compute dtype, so a float32 fit and a float64 fit take
    the same random decisions (as scikit-learn's do: its NumPy uniforms do not depend on the
    dtype either). The same numbers as ``jax.random.uniform``, from the fused threefry."""
    return threefry_uniform32(key, shape)


def _sweeps(params: RBMParams, v, u_h, u_v):
    r"""Block-Gibbs sweeps :math:`h \sim p(h \mid v)`, :math:`v \sim p(v \mid h)`, one per
    leading entry of the uniforms ``u_h`` ``(k, M, n_hidden)`` and ``u_v`` ``(k, M, n_vis)``."""

    def sweep(v, u):
        h = _bernoulli(u[0], hidden_mean(params, v))
        return _bernoulli(u[1], visible_mean(params, h)), None

    if u_h.shape[0] <= 2:  # unrolled: a loop costs more compile time than a few sweeps
        for i in range(u_h.shape[0]):
            v = sweep(v, (u_h[i], u_v[i]))[0]
        return v
    return jax.lax.scan(sweep, v, (u_h, u_v))[0]


def _surrogate(params: RBMParams, v, h_mean, weight):
    r""":math:`\sum_n w_n E(v_n, \operatorname{sg}(\mathbb{E}[h \mid v_n]))`.

    Its gradient equals that of :math:`\sum_n w_n F(v_n)` (the free-energy surrogate of
    :func:`numpyro_rbm.training.free_energy_loss`): :math:`\nabla_\theta F(v) =
    \mathbb{E}_{h \mid v}[\nabla_\theta E(v, h)] = \nabla_\theta E(v, \mathbb{E}[h \mid
    v])` because :math:`E` is affine in :math:`h`. Differentiating the energy (bilinear) at the
    hidden means scikit-learn's update uses costs matrix products only, where differentiating
    softplus through ``logaddexp`` costs three transcendentals per unit (measured: half the
    time per update on CPU).
    """
    h_mean = jax.lax.stop_gradient(h_mean)
    return jnp.sum(weight * energy(params, v, h_mean))


def _update(state: _State, batch, count, u_h, u_v, key, learning_rate, betas, method, k):
    r"""One SGD step on a zero-padded minibatch ``batch`` whose first ``count`` rows are data,
    with pre-drawn uniforms ``u_h``, ``u_v`` (``"pcd"``, ``"cd"``) or a key (``"pt"``).

    scikit-learn's update: :math:`\theta \mathrel{+}= \frac{\eta}{n_b}(\text{sums over
    the minibatch} - \text{sums over the negative particles})` of the statistics
    :math:`v\,\mathbb{E}[h \mid v]^\top`, :math:`v`, :math:`\mathbb{E}[h \mid v]`, all at
    the current parameters. A step with ``count == 0`` (padding) changes nothing.
    """
    params = state.params
    dtype = batch.dtype
    mask = (jnp.arange(batch.shape[0]) < count).astype(dtype)
    replicas = state.replicas
    if method == "pcd":
        # scikit-learn's order: v' ~ p(v | h_samples), (k - 1) more sweeps, h_samples ~ p(h | v').
        v_neg = _bernoulli(u_v[0], visible_mean(params, state.h_samples))
        v_neg = _sweeps(params, v_neg, u_h[: k - 1], u_v[1:])
        neg_weight = jnp.ones(v_neg.shape[0], dtype)
        u_last = u_h[k - 1]
    elif method == "cd":
        v_neg = _sweeps(params, batch, u_h[:k], u_v)
        neg_weight = mask
        u_last = u_h[k]
    else:
        key_pt, key_h = jax.random.split(key)
        zeros = jnp.zeros_like(params.visible_bias)  # the beta = 0 end: the uniform model
        replicas, _ = pt_negative(key_pt, params, replicas, betas, zeros, k)
        v_neg = replicas[-1]
        neg_weight = jnp.ones(v_neg.shape[0], dtype)
        u_last = _uniforms(key_h, (v_neg.shape[0], params.n_hidden))
    h_neg = hidden_mean(params, v_neg)
    # Weights +-1 keep the sums exact where the data allow (as scikit-learn's are); the step
    # learning_rate / n_b then scales them.
    grads = jax.grad(_surrogate)(
        params,
        jnp.concatenate([batch, v_neg]),
        jnp.concatenate([hidden_mean(params, batch), h_neg]),
        jnp.concatenate([mask, -neg_weight]),
    )
    step = learning_rate / jnp.maximum(count, 1).astype(dtype) * (count > 0).astype(dtype)
    params = jax.tree.map(lambda p, g: p - step * g, params, grads)
    active = count > 0
    h_samples = _bernoulli(u_last, h_neg)[: state.h_samples.shape[0]]
    return _State(
        params,
        jnp.where(active, h_samples, state.h_samples),
        jnp.where(active, replicas, state.replicas),
        state.key,
    )


@partial(jax.jit, static_argnames=("method", "k"))
def _train_groups(state: _State, batches, counts, learning_rate, betas, *, method: str, k: int):
    """Trains on minibatches ``(n_groups, G, batch_size, n_features)`` holding ``counts``
    ``(n_groups, G)`` data rows each: a scan over groups, each drawing the uniforms of its
    ``G`` minibatches at once (one vectorised call rather than ``G`` small ones) and scanning
    :func:`_update` over them. A group without data (padding) leaves the state untouched, key
    included, so an epoch cut into chunks of groups equals the epoch in one call."""
    n_chains = batches.shape[2] if method == "cd" else state.h_samples.shape[0]
    group = batches.shape[1]
    n_h, n_v = state.params.n_hidden, state.params.n_visible
    n_uh = k + 1 if method == "cd" else k

    def run_group(state, xs):
        batches_g, counts_g = xs
        key, key_h, key_v, key_pt = jax.random.split(state.key, 4)
        if method == "pt":
            u_h = jnp.zeros((group, 0))
            u_v = jnp.zeros((group, 0))
        else:
            u_h = _uniforms(key_h, (group, n_uh, n_chains, n_h))
            u_v = _uniforms(key_v, (group, k, n_chains, n_v))
        keys = jax.random.split(key_pt, group)

        def body(state, xs):
            batch, count, uh, uv, key_step = xs
            state = _update(state, batch, count, uh, uv, key_step, learning_rate, betas, method, k)
            return state, None

        state = jax.lax.scan(body, state, (batches_g, counts_g, u_h, u_v, keys))[0]
        return state._replace(key=key)

    def group_step(state, xs):
        return jax.lax.cond(jnp.any(xs[1] > 0), run_group, lambda s, _: s, state, xs), None

    return jax.lax.scan(group_step, state, (batches, counts))[0]


def _group_size(n_batches, batch_size, n_features, n_components, k):
    """Minibatches per group: a power of two, at most 16 (and at most what makes the group's
    uniforms about 8 MiB), at most ``n_batches`` rounded up to a power of two."""
    per_batch = 4 * batch_size * (k + 1) * (n_features + n_components)
    cap = min(16, _pow2_floor(max(1, (8 * 2**20) // per_batch)))
    return min(cap, 1 << (max(1, n_batches) - 1).bit_length())


def _pow2_floor(n: int) -> int:
    return 1 << (int(n).bit_length() - 1)


def _coarse_ceil(n: int) -> int:
    """``n`` rounded up to three significant bits (at most 25% more): padding a dimension to
    these few sizes lets inputs of similar sizes (cross-validation folds, the last partial
    minibatch) share one compilation."""
    step = 1 << max(0, int(n).bit_length() - 3)
    return -(-int(n) // step) * step


# --- pure-JAX evaluation functions (row-chunked by _map_rows) ---------------------------------


@jax.jit
def _hidden_means(params: RBMParams, v):
    return hidden_mean(params, v)


@jax.jit
def _gibbs_step(key, params: RBMParams, v):
    key_h, key_v = jax.random.split(key)
    h = _bernoulli(_uniforms(key_h, v.shape[:-1] + (params.n_hidden,)), hidden_mean(params, v))
    return _bernoulli(_uniforms(key_v, v.shape), visible_mean(params, h))


@jax.jit
def _flip_scores(params: RBMParams, v, flip):
    r""":math:`n_\text{features} \cdot \log\sigma\big(F(\tilde v) - F(v)\big)` with
    :math:`\tilde v` equal to :math:`v` but for unit ``flip`` of each row set to
    :math:`1 - v_i` (scikit-learn's stochastic pseudo-log-likelihood)."""
    rows = jnp.arange(v.shape[0])
    flipped = v.at[rows, flip].set(1 - v[rows, flip])
    delta = free_energy(params, flipped) - free_energy(params, v)
    return v.shape[1] * jax.nn.log_sigmoid(delta)


@jax.jit
def _visible_means(params: RBMParams, h):
    return visible_mean(params, h)


@jax.jit
def _free_energies(params: RBMParams, v):
    return free_energy(params, v)


def _x64(dtype):
    """A context in which JAX computes in ``dtype`` (float64 needs 64-bit mode)."""
    return jax.enable_x64(True) if np.dtype(dtype) == np.float64 else contextlib.nullcontext()


def _bucket(n: int, cap: int) -> int:
    """The smallest power of two >= ``n`` (at least 8, at most ``cap``): padding calls to a
    few sizes keeps the number of compilations logarithmic in the input size."""
    return min(cap, max(8, 1 << (int(n) - 1).bit_length()))


def _map_rows(fn, X, dtype, *row_args):
    """``fn(chunk_index, rows, *row_args_of_those_rows)`` over row chunks of a dense or
    sparse ``X``, each densified, cast to ``dtype`` and zero-padded to a power-of-two number
    of rows."""
    n, d = X.shape
    rows_fit = _ROW_CHUNK_BYTES // max(1, d * np.dtype(dtype).itemsize)
    cap = max(8, 1 << (max(1, rows_fit).bit_length() - 1))  # a power of two
    out = []
    for start in range(0, n, cap):
        stop = min(n, start + cap)
        rows = X[start:stop]
        rows = rows.toarray() if sp.issparse(rows) else np.asarray(rows)
        size = _bucket(stop - start, cap)
        padded = np.zeros((size, d), dtype)
        padded[: stop - start] = rows
        args = []
        for a in row_args:
            a_pad = np.zeros((size,) + a.shape[1:], a.dtype)
            a_pad[: stop - start] = a[start:stop]
            args.append(a_pad)
        out.append(np.asarray(fn(start // cap, padded, *args))[: stop - start])
    return np.concatenate(out) if out else np.zeros((0,), dtype)


def _jax_key(rng):
    """A JAX key drawn from a NumPy ``RandomState`` (reproducible for an integer seed)."""
    return jax.random.key(int(rng.randint(np.iinfo(np.int32).max)))


# --- the estimator ----------------------------------------------------------------------------


class BernoulliRBM(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    r"""Bernoulli Restricted Boltzmann Machine, a drop-in replacement for scikit-learn's.

    Binary visible and hidden units, parameters estimated by stochastic maximum likelihood
    (persistent contrastive divergence) exactly as :class:`sklearn.neural_network.BernoulliRBM`
    does, with every epoch run as one jit-compiled :func:`jax.lax.scan` (see the module
    docstring for the update). Inputs in :math:`[0, 1]` are used as visible probabilities in
    the positive phase, as scikit-learn does; :meth:`log_likelihood` needs binary inputs.

    dtypes follow scikit-learn's: float32 data give float32 parameters and outputs, anything
    else float64. Everything but training computes in that dtype (float64 in 64-bit JAX inside
    a :func:`jax.enable_x64` context, so the global JAX setting is left alone); training
    computes in float32 unless ``train_dtype="input"``.

    Parameters
    ----------
    n_components : int, default=256
        Number of binary hidden units.
    learning_rate : float, default=0.1
        SGD step size :math:`\eta` (the sums of the statistics are divided by the minibatch
        size).
    batch_size : int, default=10
        Examples per minibatch, and the number of persistent chains.
    n_iter : int, default=10
        Passes over the training data.
    verbose : int, default=0
        Print the pseudo-likelihood and time after each pass (scikit-learn's format).
    random_state : int, RandomState instance or None, default=None
        Seeds the initial weights (the same NumPy draws as scikit-learn's), the JAX keys of the
        Gibbs sampling, and the corrupted bits of :meth:`score_samples`.
    method : {"pcd", "cd", "pt"}, default="pcd"
        Negative phase: persistent chains (scikit-learn's SML), contrastive divergence started
        at the minibatch, or parallel tempering over ``n_temperatures`` replicas of the
        ``batch_size`` chains (inverse temperatures evenly spaced in :math:`[0, 1]`, the
        :math:`\beta = 0` end the uniform model).
    k : int, default=1
        Gibbs sweeps per update (per replica for ``"pt"``).
    n_temperatures : int, default=10
        Replicas of the tempering ladder (``method="pt"`` only).
    train_dtype : {"float32", "input"}, default="float32"
        The arithmetic of training. ``"float32"``: train in float32 whatever the input dtype
        (XLA's CPU float64 matrix products are about 2.4x slower at these sizes, and float32
        rounding, :math:`10^{-7}`, is far below the SGD noise); the fitted attributes still
        take the input dtype. ``"input"``: train in the input dtype (float64 inside a
        :func:`jax.enable_x64` context), as scikit-learn does.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        Weights :math:`W^\top`.
    intercept_hidden_ : ndarray of shape (n_components,)
        Hidden biases :math:`c`.
    intercept_visible_ : ndarray of shape (n_features,)
        Visible biases :math:`b`.
    h_samples_ : ndarray of shape (batch_size, n_components)
        Hidden samples of the persistent chains (for ``"cd"``: of the last negative samples;
        for ``"pt"``: of the :math:`\beta = 1` replica).
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape ``(n_features_in_,)``
        Names of features seen during fit, when ``X`` has string column names.
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "n_iter": [Interval(Integral, 0, None, closed="left")],
        "verbose": ["verbose"],
        "random_state": ["random_state"],
        "method": [StrOptions(set(METHODS))],
        "k": [Interval(Integral, 1, None, closed="left")],
        "n_temperatures": [Interval(Integral, 2, None, closed="left")],
        "train_dtype": [StrOptions({"float32", "input"})],
    }

    def __init__(
        self,
        n_components=256,
        *,
        learning_rate=0.1,
        batch_size=10,
        n_iter=10,
        verbose=0,
        random_state=None,
        method="pcd",
        k=1,
        n_temperatures=10,
        train_dtype="float32",
    ):
        self.n_components = n_components
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.n_iter = n_iter
        self.verbose = verbose
        self.random_state = random_state
        self.method = method
        self.k = k
        self.n_temperatures = n_temperatures
        self.train_dtype = train_dtype

    # --- parameters <-> JAX ----------------------------------------------------------------

    def _params(self, dtype=None) -> RBMParams:
        """The fitted parameters as an :class:`~numpyro_rbm.core.RBMParams` (weights
        ``components_.T``), as JAX arrays of ``dtype`` (default: the fitted dtype; call inside
        :func:`_x64` for float64)."""
        dtype = self.components_.dtype if dtype is None else np.dtype(dtype)
        return RBMParams(
            jnp.asarray(self.components_.T, dtype),
            jnp.asarray(self.intercept_visible_, dtype),
            jnp.asarray(self.intercept_hidden_, dtype),
        )

    def _train_dtype(self, dtype):
        """The dtype training computes in (see ``train_dtype``)."""
        return np.dtype(np.float32) if self.train_dtype == "float32" else np.dtype(dtype)

    def _init_state(self, rng, n_features, dtype, compute) -> _State:
        # The same NumPy draws as scikit-learn's initial components.
        self.components_ = np.asarray(
            rng.normal(0, 0.01, (self.n_components, n_features)), order="F", dtype=dtype
        )
        self._n_features_out = self.components_.shape[0]
        self.intercept_hidden_ = np.zeros(self.n_components, dtype=dtype)
        self.intercept_visible_ = np.zeros(n_features, dtype=dtype)
        self.h_samples_ = np.zeros((self.batch_size, self.n_components), dtype=dtype)
        key = _jax_key(rng)
        if self.method == "pt":
            # Replicas start where scikit-learn's chains take their first step: v ~ p(v | h=0),
            # uniform bits for the zero initial biases.
            key, key_rep = jax.random.split(key)
            shape = (self.n_temperatures, self.batch_size, n_features)
            self._replicas = np.asarray(jax.random.bernoulli(key_rep, 0.5, shape), dtype)
        else:
            self._replicas = np.zeros((0,), dtype)
        self._key_data = np.asarray(jax.random.key_data(key))
        return self._state(compute)

    def _state(self, dtype) -> _State:
        return _State(
            self._params(dtype),
            jnp.asarray(self.h_samples_, dtype),
            jnp.asarray(self._replicas, dtype),
            jax.random.wrap_key_data(jnp.asarray(self._key_data)),
        )

    def _store(self, state: _State, dtype):
        params = state.params
        self.components_ = np.asarray(params.weights, dtype).T
        self.intercept_visible_ = np.asarray(params.visible_bias, dtype)
        self.intercept_hidden_ = np.asarray(params.hidden_bias, dtype)
        self.h_samples_ = np.asarray(state.h_samples, dtype)
        self._replicas = np.asarray(state.replicas, dtype)
        self._key_data = np.asarray(jax.random.key_data(state.key))

    def _betas(self, dtype):
        if self.method != "pt":
            return jnp.zeros((0,), dtype)
        return jnp.linspace(0.0, 1.0, self.n_temperatures, dtype=dtype)

    def _train(self, state, batches, counts, group, dtype):
        """Runs :func:`_train_groups` on minibatches ``(n, batch_size, n_features)``, ``n`` a
        multiple of ``group``."""
        batches = jnp.asarray(batches, dtype)
        return _train_groups(
            state,
            batches.reshape((-1, group) + batches.shape[1:]),
            jnp.asarray(counts, jnp.int32).reshape(-1, group),
            jnp.asarray(self.learning_rate, dtype),
            self._betas(dtype),
            method=self.method,
            k=int(self.k),
        )

    # --- scikit-learn API --------------------------------------------------------------------

    def fit(self, X, y=None):
        """Fit the model to the data ``X`` (dense or sparse, values in [0, 1]).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Training data.
        y : ignored
            Present for API consistency.

        Returns
        -------
        self : BernoulliRBM
            The fitted model.
        """
        self._validate_params()
        X = validate_data(self, X, accept_sparse="csr", dtype=(np.float64, np.float32))
        dtype = X.dtype
        n_samples, n_features = X.shape
        rng = check_random_state(self.random_state)
        bs = int(self.batch_size)
        n_batches = int(np.ceil(float(n_samples) / bs))
        slices = list(gen_even_slices(n_batches * bs, n_batches, n_samples=n_samples))
        counts = np.array([s.stop - s.start for s in slices], np.int32)
        starts = np.array([s.start for s in slices])
        group = _group_size(n_batches, bs, n_features, self.n_components, int(self.k))
        # Padding groups are skipped (lax.cond), so rounding their number up costs memory only.
        n_groups = _coarse_ceil(-(-n_batches // group))
        compute = self._train_dtype(dtype)
        with _x64(compute):
            state = self._init_state(rng, n_features, dtype, compute)
            if sp.issparse(X):
                # A scan needs its minibatches as one dense array: densify a bounded chunk of
                # groups of minibatches at a time (the last chunk padded with empty, no-op
                # groups, so that every chunk has one shape and one compilation).
                per_group = group * bs * n_features * np.dtype(dtype).itemsize
                n_chunk = int(max(1, min(n_groups, _SPARSE_CHUNK_BYTES // per_group)))
                size = n_chunk * group
                chunks = [range(i, min(n_batches, i + size)) for i in range(0, n_batches, size)]
                dense = None
            else:
                size = n_groups * group
                chunks = [range(n_batches)]
                dense = jnp.asarray(_batches(X, starts, counts, chunks[0], bs, size), compute)
            begin = time.time()
            for iteration in range(1, self.n_iter + 1):
                for idx in chunks:
                    batches = (
                        _batches(X, starts, counts, idx, bs, size) if dense is None else dense
                    )
                    chunk_counts = np.zeros(size, np.int32)
                    chunk_counts[: len(idx)] = counts[idx.start : idx.stop]
                    state = self._train(state, batches, chunk_counts, group, compute)
                if self.verbose:
                    self._store(state, dtype)
                    end = time.time()
                    score = self.score_samples(X).mean()
                    print(
                        f"[{type(self).__name__}] Iteration {iteration}, "
                        f"pseudo-likelihood = {score:.2f}, time = {end - begin:.2f}s"
                    )
                    begin = end
            self._store(state, dtype)
        return self

    def partial_fit(self, X, y=None):
        """Fit the model to one minibatch ``X`` (one SGD update on all of its rows, as
        scikit-learn does; computed in float64, as scikit-learn's ``partial_fit`` does).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Training data.
        y : ignored
            Present for API consistency.

        Returns
        -------
        self : BernoulliRBM
            The fitted model.
        """
        self._validate_params()
        first_pass = not hasattr(self, "components_")
        X = validate_data(self, X, accept_sparse="csr", dtype=np.float64, reset=first_pass)
        if not hasattr(self, "random_state_"):
            self.random_state_ = check_random_state(self.random_state)
        dtype = np.dtype(np.float64)
        # One minibatch: densifying it is what the update needs anyway.
        batch = X.toarray() if sp.issparse(X) else np.asarray(X)
        n = batch.shape[0]
        # Pad to at least batch_size rows (CD draws its h_samples_ from the batch's rows), and
        # to one of a few sizes, so that minibatches of similar sizes share one compilation.
        padded = np.zeros((1, _coarse_ceil(max(n, self.batch_size)), batch.shape[1]), dtype)
        padded[0, :n] = batch
        compute = self._train_dtype(dtype)
        with _x64(compute):
            if first_pass:
                state = self._init_state(self.random_state_, X.shape[1], dtype, compute)
            else:
                state = self._state(compute)
            state = self._train(state, padded, np.array([n], np.int32), 1, compute)
            self._store(state, dtype)
        return self

    def transform(self, X):
        """Hidden activation probabilities :math:`P(h = 1 \\mid v = X)`.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The data to transform.

        Returns
        -------
        h : ndarray of shape (n_samples, n_components)
            Latent representations of the data.
        """
        check_is_fitted(self)
        X = validate_data(
            self, X, accept_sparse="csr", reset=False, dtype=(np.float64, np.float32)
        )
        return self._mean_hiddens(X)

    # --- scikit-learn's private helpers ------------------------------------------------------
    # scikit-learn's own tests and code in the wild call these; same signatures, semantics and
    # dtypes (those of NumPy arithmetic on the input and the fitted parameters), computed by
    # the core's conditionals. Inputs are not validated, as in scikit-learn: any dense array
    # whose last axis has the layer's size (a single row is 1-D), or a sparse matrix.

    def _layer_map(self, fn, x, out_shape):
        """``fn(params, rows)`` (jit-compiled, rows ``(n, d)``) over the rows of ``x`` in the
        dtype NumPy's arithmetic on ``x`` and the parameters gives, shaped
        ``x.shape[:-1] + out_shape``."""
        if sp.issparse(x):
            x, lead = sp.csr_matrix(x), x.shape[:1]
        else:
            x = np.asarray(x)
            lead = x.shape[:-1]
            x = x.reshape(-1, x.shape[-1])
        dtype = np.result_type(x.dtype, self.components_.dtype)
        if not np.issubdtype(dtype, np.floating):
            dtype = np.dtype(np.float64)
        with _x64(dtype):
            params = self._params(dtype)
            out = _map_rows(lambda i, rows: fn(params, rows), x, dtype)
        return out.reshape(lead + out_shape)

    def _mean_hiddens(self, v):
        """:math:`P(h = 1 \\mid v) = \\sigma(c + W^\\top v)`
        (:func:`~numpyro_rbm.core.hidden_mean`), shape ``v.shape[:-1] + (n_components,)``;
        what :meth:`transform` returns."""
        return self._layer_map(_hidden_means, v, self.components_.shape[:1])

    def _sample_hiddens(self, v, rng):
        """:math:`h \\sim p(h \\mid v)` drawn as scikit-learn draws it: booleans
        ``rng.uniform(size=p.shape) < p`` with :math:`p` from :meth:`_mean_hiddens` and ``rng``
        a NumPy ``RandomState``, so that given the same parameters and the same ``rng`` state
        both estimators return the same draws."""
        p = self._mean_hiddens(v)
        return rng.uniform(size=p.shape) < p

    def _sample_visibles(self, h, rng):
        """:math:`v \\sim p(v \\mid h)`, booleans ``rng.uniform(size=p.shape) < p`` with
        :math:`p = \\sigma(b + W h)` (:func:`~numpyro_rbm.core.visible_mean`), as scikit-learn
        draws them."""
        p = self._layer_map(_visible_means, h, self.components_.shape[1:])
        return rng.uniform(size=p.shape) < p

    def _free_energy(self, v):
        """The free energy :math:`F(v) = -b^\\top v - \\sum_j \\log(1 + e^{c_j + (W^\\top
        v)_j})` (:func:`~numpyro_rbm.core.free_energy`), shape ``v.shape[:-1]``."""
        return self._layer_map(_free_energies, v, ())

    def gibbs(self, v):
        """One Gibbs step :math:`h \\sim p(h \\mid v)`, :math:`v' \\sim p(v \\mid h)`.

        Parameters
        ----------
        v : {array-like, sparse matrix} of shape (n_samples, n_features)
            Values of the visible layer to start from.

        Returns
        -------
        v_new : ndarray of bool, shape (n_samples, n_features)
            The visible layer after one Gibbs step (boolean, as scikit-learn returns it).
        """
        check_is_fitted(self)
        if not hasattr(self, "random_state_"):
            self.random_state_ = check_random_state(self.random_state)
        v = check_array(v, accept_sparse="csr", dtype=(np.float64, np.float32))
        dtype = np.result_type(v.dtype, self.components_.dtype)
        key = _jax_key(self.random_state_)
        with _x64(dtype):
            params = self._params(dtype)
            out = _map_rows(
                lambda i, rows: _gibbs_step(jax.random.fold_in(key, i), params, rows), v, dtype
            )
        return out.reshape(v.shape).astype(bool)

    def score_samples(self, X):
        """Stochastic pseudo-log-likelihood, as scikit-learn computes it.

        For each row one unit :math:`i`, drawn uniformly from ``random_state``'s stream, is
        flipped; the score is :math:`n_\\text{features} \\log\\sigma(F(\\tilde v) - F(v))`,
        an unbiased estimate of the pseudo-log-likelihood :math:`\\sum_i \\log p(v_i \\mid
        v_{-i})` (Besag 1975) for binary :math:`v`.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Values of the visible layer.

        Returns
        -------
        pseudo_likelihood : ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        v = validate_data(self, X, accept_sparse="csr", reset=False)
        rng = check_random_state(self.random_state)
        flip = rng.randint(0, v.shape[1], v.shape[0])  # scikit-learn's draws, in its order
        dtype = np.result_type(v.dtype, self.components_.dtype)
        if not np.issubdtype(dtype, np.floating):
            dtype = np.dtype(np.float64)
        with _x64(dtype):
            params = self._params(dtype)
            return _map_rows(
                lambda i, rows, f: _flip_scores(params, rows, f), v, dtype, flip.astype(np.int32)
            )

    # --- beyond scikit-learn -----------------------------------------------------------------

    def to_distribution(self, **kwargs):
        """The fitted model as a NumPyro :class:`~numpyro_rbm.RBM` distribution over
        :math:`v`.

        Keyword arguments go to :class:`~numpyro_rbm.RBM` (e.g. ``log_z=None`` for an
        unnormalised model whose smaller layer is too large to enumerate, or
        ``log_z=numpyro_rbm.ais(...)``). The parameters keep the fitted dtype when 64-bit JAX
        is on, and are float32 otherwise.
        """
        from .distribution import RBM

        check_is_fitted(self)
        dtype = self.components_.dtype if jax.config.read("jax_enable_x64") else np.float32
        return RBM(self._params(dtype), **kwargs)

    def log_likelihood(self, X, *, method="auto", num_runs=100, betas=None):
        r"""The average log-likelihood :math:`\frac1N\sum_n \log p(v_n)` of binary data.

        :math:`\log p(v) = -F(v) - \log Z` with :math:`\log Z` exact
        (:func:`numpyro_rbm.partition.log_partition`, enumerating the smaller layer) or
        estimated by annealed importance sampling (:func:`numpyro_rbm.ais`, base model from
        the marginals of ``X``). Computed in the fitted dtype.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Binary data (0/1); :math:`p(v)` is not defined for values in between.
        method : {"auto", "exact", "ais"}, default="auto"
            ``"auto"``: exact when ``min(n_features, n_components) <= 20``, else AIS.
        num_runs : int, default=100
            AIS runs.
        betas : int or array, optional
            AIS schedule (default: :func:`numpyro_rbm.ais`'s reference schedule).

        Returns
        -------
        numpyro_rbm.LogLikelihood
            ``mean`` (the average), ``interval`` (from AIS's :math:`\log Z` interval; a point
            when exact), ``stderr`` and ``per_example``.
        """
        from .ais import ais, log_likelihood
        from .partition import log_partition

        check_is_fitted(self)
        if method not in ("auto", "exact", "ais"):
            raise ValueError(f"method must be 'auto', 'exact' or 'ais', got {method!r}")
        v = validate_data(self, X, accept_sparse="csr", reset=False)
        v = v.toarray() if sp.issparse(v) else np.asarray(v)
        bad = (v != 0) & (v != 1)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise ValueError(
                f"log_likelihood needs binary data (0 or 1): X[{row}, {col}] = "
                f"{v[row, col]!r} ({int(bad.sum())} such entries). A Bernoulli RBM assigns "
                "probabilities to binary vectors only; binarise first, e.g. X > 0.5"
            )
        dtype = self.components_.dtype
        exact = method == "exact" or (
            method == "auto" and min(self.components_.shape) <= EXACT_MAX_UNITS
        )
        with _x64(dtype):
            params = self._params(dtype)
            if exact:
                log_z = log_partition(params, max_units=None)
            else:
                key = _jax_key(check_random_state(self.random_state))
                log_z = ais(params, key, data=v, num_runs=num_runs, betas=betas)
            result = log_likelihood(params, v, log_z)
            return jax.tree.map(np.asarray, result)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    def _more_tags(self):  # pragma: no cover - scikit-learn < 1.6
        return {"preserves_dtype": [np.float64, np.float32]}


def _batches(X, starts, counts, idx, batch_size, n_slots=None):
    """Minibatches ``idx`` of ``X`` as a zero-padded dense array ``(n_slots, batch_size, d)``."""
    n_slots = len(idx) if n_slots is None else n_slots
    out = np.zeros((n_slots, batch_size, X.shape[1]), X.dtype)
    if len(idx) == 0:
        return out
    first, last = starts[idx.start], starts[idx.stop - 1] + counts[idx.stop - 1]
    rows = X[first:last]
    rows = rows.toarray() if sp.issparse(rows) else np.asarray(rows)
    # gen_even_slices(n_batches * batch_size, n_batches) gives contiguous slices, all
    # batch_size long but the last: the rows fill the minibatches in order.
    out.reshape(n_slots * batch_size, X.shape[1])[: last - first] = rows
    return out
