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
import optax

from ._threefry import threefry_split
from .core import RBMParams, free_energy, gibbs_sweep, hidden_field, hidden_mean, visible_mean
from .learning import CD, PT, HiddenPCD, Weighted, build_trainer, uniform_sampler
from .learning.trainer import TrainState

__all__ = ["BernoulliRBM"]

METHODS = ("cd", "pcd", "pt")
# Rows of dense data handled per call outside training (transform, scores, sampling): calls
# are padded up to a power of two of rows, so a few compilations serve every input size.
_ROW_CHUNK_BYTES = 16 * 2**20
# Sparse training data is densified this many bytes of minibatches at a time.
_SPARSE_CHUNK_BYTES = 32 * 2**20


# --- training: the learning engine's trainer, fed scikit-learn's minibatches -------------------

# SGD with the step size in the optimiser state (a traced value): one compiled trainer serves
# every learning_rate, and the transformation is one object, so the compilation cache hits.
_SGD = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)


def _negative_phase(method: str, k: int, batch_size: int, n_temperatures: int):
    """The negative phase of ``method``: scikit-learn's PCD (persistent hidden chains), or CD /
    parallel tempering drawing the same way (uniforms compared with the conditional means;
    tempering's :math:`\beta = 0` end the uniform model, its replicas random at first)."""
    if method == "pcd":
        return HiddenPCD(k, batch_size)
    if method == "cd":
        return CD(k, sampler=uniform_sampler)
    return PT(k, batch_size, n_temperatures, base="zero", init_from="random")


def _trainer(method: str, k: int, batch_size: int, n_temperatures: int):
    phase = _negative_phase(method, k, batch_size, n_temperatures)
    return build_trainer(phase, _SGD, centering=False)


def _tree_where(condition, new, old):
    return jax.tree.map(lambda a, b: jnp.where(condition, a, b), new, old)


@partial(jax.jit, static_argnames="trainer")
def _train_groups(trainer, state: TrainState, batches, counts):
    r"""Trains on minibatches ``(n_groups, G, batch_size, n_features)`` holding ``counts``
    ``(n_groups, G)`` data rows each, one ``trainer.step`` per minibatch. A minibatch of
    ``count`` rows enters as :class:`~numpyro_rbm.learning.Weighted` examples of weight
    :math:`1/\text{count}` (zero for padding rows), so that SGD at step :math:`\eta` makes
    scikit-learn's update :math:`\frac{\eta}{n_b}(\text{sums over the minibatch} -
    \text{sums over the negative particles})`. A minibatch without data (padding) leaves the
    state untouched, and a group without data is skipped, key included, so an epoch cut into
    chunks of groups equals the epoch in one call."""
    batch_size = batches.shape[2]

    def run_group(state, xs):
        batches_g, counts_g = xs
        key, key_steps = threefry_split(state.key)
        keys = threefry_split(key_steps, batches_g.shape[0])

        def body(state, xs):
            batch, count, key_step = xs
            mask = (jnp.arange(batch_size) < count).astype(batch.dtype)
            weights = mask / jnp.maximum(count, 1).astype(batch.dtype)
            new, _ = trainer.step(state, Weighted(batch, weights), key_step)
            return _tree_where(count > 0, new, state), None

        state = jax.lax.scan(body, state, (batches_g, counts_g, keys))[0]
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
    """One sweep, drawing as scikit-learn does (:func:`~numpyro_rbm.learning.uniform_sampler`)."""
    return gibbs_sweep(key, params, v, sampler=uniform_sampler)[0]


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

    def _trainer(self):
        return _trainer(self.method, int(self.k), int(self.batch_size), int(self.n_temperatures))

    def _init_state(self, rng, n_features, dtype, compute) -> TrainState:
        # The same NumPy draws as scikit-learn's initial components.
        self.components_ = np.asarray(
            rng.normal(0, 0.01, (self.n_components, n_features)), order="F", dtype=dtype
        )
        self._n_features_out = self.components_.shape[0]
        self.intercept_hidden_ = np.zeros(self.n_components, dtype=dtype)
        self.intercept_visible_ = np.zeros(n_features, dtype=dtype)
        placeholder = jnp.zeros((self.batch_size, n_features), compute)  # CD's chain shape
        state = self._trainer().init(
            _jax_key(rng), self._params(compute), placeholder, self.batch_size
        )
        self._store(state, dtype)
        return self._state(compute)

    def _state(self, dtype) -> TrainState:
        """The trainer's state from the fitted attributes (PCD's chains are ``h_samples_``)."""
        params = self._params(dtype)
        opt_state = _SGD.init(params)
        opt_state.hyperparams["learning_rate"] = jnp.asarray(self.learning_rate, dtype)
        chains = self.h_samples_ if self.method == "pcd" else self._chain_state
        zeros = jnp.zeros((params.n_visible,), dtype), jnp.zeros((params.n_hidden,), dtype)
        return TrainState(
            params,
            *zeros,
            opt_state,
            jax.tree.map(lambda x: jnp.asarray(x, dtype), chains),
            jax.random.wrap_key_data(jnp.asarray(self._key_data)),
        )

    def _store(self, state: TrainState, dtype):
        params = state.params
        self.components_ = np.asarray(params.weights, dtype).T
        self.intercept_visible_ = np.asarray(params.visible_bias, dtype)
        self.intercept_hidden_ = np.asarray(params.hidden_bias, dtype)
        self._key_data = np.asarray(jax.random.key_data(state.key))
        if self.method == "pcd":
            self.h_samples_ = np.asarray(state.chains, dtype)
            return
        # CD and tempering keep visible chains: h_samples_ is drawn from the model's chains.
        self._chain_state = jax.tree.map(lambda x: np.asarray(x, dtype), state.chains)
        chains = self._trainer().negative_phase.chains(state.chains)
        key = jax.random.fold_in(state.key, 1)
        h = uniform_sampler(key, params.hidden_layer, hidden_field(params, chains))
        self.h_samples_ = np.asarray(h, dtype)

    def _train(self, state, batches, counts, group, dtype):
        """Runs :func:`_train_groups` on minibatches ``(n, batch_size, n_features)``, ``n`` a
        multiple of ``group``."""
        batches = jnp.asarray(batches, dtype)
        return _train_groups(
            self._trainer(),
            state,
            batches.reshape((-1, group) + batches.shape[1:]),
            jnp.asarray(counts, jnp.int32).reshape(-1, group),
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
        from .ais import log_likelihood

        check_is_fitted(self)
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
        with _x64(self.components_.dtype):
            params = self._params()
            key = _jax_key(check_random_state(self.random_state))
            result = log_likelihood(
                params, v, method=method, key=key, num_runs=num_runs, betas=betas
            )
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
