r"""When is :math:`Z` finite: the normalisability of an RBM, from its unit types' tails.

With continuous units :math:`Z = \sum\!\!\!\!\int e^{-E(v, h)}` can diverge. Far from the
origin the energy is dominated by its quadratic part,

.. math::

    E_2(x) = \tfrac12 \sum_a \kappa_a(\operatorname{sign} x_a)\, x_a^2 - v^\top W h,
    \qquad x = (v, h),

where :math:`\kappa_a(\pm)` is unit :math:`a`'s curvature on each half-line
(:meth:`~numpyro_rbm.units.UnitType.tail_curvature`: the Gaussian precision
:math:`\lambda`, a ReLU's :math:`\gamma` on :math:`h \ge 0`, a dReLU's :math:`\gamma_\pm`);
bounded units (Bernoulli, spin, Potts) contribute no direction. :math:`Z` is finite when
:math:`E_2 > 0` on every non-zero direction of the support (the linear terms are then
dominated) and infinite when :math:`E_2 < 0` on one (a cone of directions where
:math:`-E` grows quadratically); :math:`\min E_2 = 0` is the boundary, where the biases
decide. With a Gaussian visible layer this is the strict copositivity of
:math:`\Gamma - W^\top \Lambda^{-1} W` on the hidden support (positive definiteness for
Gaussian hidden units). ``docs/units.md`` ("When is Z finite") states it per unit pair.

:func:`check_normalisable` decides it: units with the same curvature on both half-lines
(Gaussian) are free coordinates and are minimised out exactly (a Schur complement, which needs
their block positive definite); every other half-line is a ray :math:`x_r \ge 0`, and the
reduced form :math:`B` must be strictly copositive. That is decided exactly, by Kaplan's
criterion (the smallest eigenvalue of a principal submatrix with a positive eigenvector), over
at most :data:`EXACT_MAX_SUPPORTS` supports (about 13 ReLU or 8 dReLU units); beyond that a
sufficient condition (:math:`B` or its negative part positive definite) or a violating
direction found among eigenvectors decides, and otherwise the verdict is ``None``.

References:
    W. Kaplan, *A test for copositive matrices*, Linear Algebra Appl. 313, 203-206 (2000).

    K. P. Hadeler, *On copositive matrices*, Linear Algebra Appl. 49, 79-89 (1983).
"""

from __future__ import annotations

import itertools
import math
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Normalisability",
    "NotNormalisable",
    "NormalisabilityWarning",
    "check_normalisable",
    "require_normalisable",
    "EXACT_MAX_SUPPORTS",
    "unbounded_direction_found",
]

#: The most supports (admissible sets of rays) the exact copositivity test enumerates.
EXACT_MAX_SUPPORTS = 2**13
#: Margins within this fraction of the form's scale are the boundary (verdict ``None``).
TOLERANCE = 1e-9


class NotNormalisable(ValueError):
    """Raised when a model whose :math:`Z` is infinite would be normalised or trained."""


class NormalisabilityWarning(UserWarning):
    """Warned when the normalisability of a model could not be decided."""


class Normalisability(NamedTuple):
    """The verdict of :func:`check_normalisable`."""

    #: ``True``: :math:`Z < \infty` (proven); ``False``: :math:`Z = \infty` (proven, see
    #: ``witness``); ``None``: undecided (the boundary, or too large for the exact test).
    normalisable: bool | None
    #: How it was decided: ``"bounded"``, ``"curvature"``, ``"positive definite"``,
    #: ``"copositive (exact)"``, ``"sufficient: ..."``, ``"witness"``, ``"undecided"`` or
    #: ``"non-finite"`` (NaN or infinite weights or unit parameters: verdict ``None``).
    method: str
    #: The smallest value of the reduced quadratic form over unit directions of its cone
    #: (its sign decides; exact for the exact methods, an upper bound for ``"witness"``).
    margin: float | None
    #: The condition, in words, and what was found.
    reason: str
    #: For ``False``: a unit direction ``(v, h)`` of the support along which
    #: :math:`E_2 < 0`, i.e. :math:`-E \to +\infty`; else ``None``.
    witness: tuple[np.ndarray, np.ndarray] | None = None


def _curvatures(layer, n):
    """``(2, n)`` float64 curvatures of a bound layer, or ``None`` for a bounded one."""
    tails = layer.tail_curvature()
    if tails is None:
        return None
    return np.stack([np.broadcast_to(np.asarray(t, np.float64), (n,)) for t in tails])


_UNDECLARED = np.zeros((2, 0))  # a unit type without tail_curvature (its conditional is finite)


def _declared(layer, n, undeclared):
    try:
        return _curvatures(layer, n)
    except NotImplementedError as err:
        undeclared.append(str(err))
        return _UNDECLARED


def _pair_name(params):
    return f"{params.visible_units.spec} visible x {params.hidden_units.spec} hidden"


def _index(params, idx):
    """The model at batch index ``idx`` (leading axes broadcast)."""
    shape = params.batch_shape

    def take(ndim):
        return lambda x: np.broadcast_to(np.asarray(x), shape + np.shape(x)[-ndim:])[idx]

    vector = take(1)
    return params.replace(
        weights=take(2)(params.weights),
        visible_bias=vector(params.visible_bias),
        hidden_bias=vector(params.hidden_bias),
        visible_unit_params=jax.tree.map(vector, params.visible_unit_params),
        hidden_unit_params=jax.tree.map(vector, params.hidden_unit_params),
    )


def check_normalisable(params) -> Normalisability:
    r"""Whether the RBM ``params`` has a finite normaliser :math:`Z`.

    Decided from the unit types' :meth:`~numpyro_rbm.units.UnitType.tail_curvature` and the
    weights (``docs/units.md``, "When is Z finite"): always finite when a layer is bounded
    and every unit of the other has positive curvature; otherwise :math:`Z < \infty` iff the
    quadratic part of the energy is positive on the support's directions, i.e. (after the
    Gaussian coordinates are minimised out) a matrix is positive definite (Gaussian units on
    both sides) or strictly copositive (ReLU, dReLU). Exact for PD, and for copositivity up to
    :data:`EXACT_MAX_SUPPORTS` supports; beyond that a sufficient condition or a violating
    direction decides, or the verdict is ``None``. The biases never matter, except on the
    boundary (verdict ``None``). For a batch of models the first one that is not proven
    normalisable is reported.

    Returns:
        A :class:`Normalisability` (``normalisable``, ``method``, ``margin``, ``reason``,
        ``witness``).
    """
    shape = params.batch_shape
    if shape and _bounded_and_positive(params):  # one vectorised check for the whole batch
        return _check_one(_index(params, (0,) * len(shape)))._replace(margin=None)
    verdict = None
    for idx in np.ndindex(*shape):
        one = _index(params, idx) if shape else params
        verdict = _check_one(one)
        if verdict.normalisable is not True:
            if shape:
                verdict = verdict._replace(reason=f"batch element {idx}: {verdict.reason}")
            return verdict
    return verdict


def _bounded_and_positive(params) -> bool:
    """A layer is bounded and the other's curvatures (all batch elements) are positive."""
    try:
        tails = [params.visible_layer.tail_curvature(), params.hidden_layer.tail_curvature()]
    except NotImplementedError:
        return False
    if all(t is not None for t in tails):
        return False
    return all(bool(np.all(np.asarray(k) > 0)) for t in tails if t is not None for k in t)


def _check_one(params) -> Normalisability:
    n, m = params.n_visible, params.n_hidden
    pair = _pair_name(params)
    arrays = (params.weights, params.visible_unit_params, params.hidden_unit_params)
    if not all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(arrays)):
        return Normalisability(
            None, "non-finite", None, f"{pair}: the weights or unit parameters are not finite"
        )
    undeclared = []
    kv, kh = (_declared(layer, size, undeclared) for layer, size in (
        (params.visible_layer, n), (params.hidden_layer, m)))  # fmt: skip
    if undeclared and not (kv is None or kh is None):  # neither layer known to be bounded
        return Normalisability(None, "undecided", None, f"{pair}: {undeclared[0]}")
    for layer, k in (("visible", kv), ("hidden", kh)):
        if k is not None and k is not _UNDECLARED and not np.all(k > 0):
            side, unit = np.argwhere(~(k > 0))[0]
            return Normalisability(
                False, "curvature", float(np.nanmin(k)) if np.any(k == k) else None,
                f"{pair}: {layer} unit {unit} has curvature {k[side, unit]:g} on its "
                f"{'positive' if side == 0 else 'negative'} half-line; every continuous unit "
                "needs a curvature > 0 (else its own conditional integral diverges)",
                _unit_witness(n, m, layer, unit, side),
            )  # fmt: skip
    if kv is None or kh is None:  # a bounded layer: only the other's own conditionals matter
        bounded = "both layers are" if kv is None and kh is None else (
            f"the {'visible' if kv is None else 'hidden'} layer is"
        )  # fmt: skip
        finite = [k for k in (kv, kh) if k is not None and k is not _UNDECLARED]
        margin = float(np.min(finite[0][np.isfinite(finite[0])])) if finite else None
        return Normalisability(
            True, "bounded", margin,
            f"{pair}: {bounded} bounded and every continuous unit has a positive curvature, "
            "so Z is finite for all weights and biases",
        )  # fmt: skip
    weights = np.asarray(params.weights, np.float64)
    return _decide(weights, kv, kh, pair)


def _unit_witness(n, m, layer, unit, side):
    x = np.zeros(n + m)
    x[unit + (n if layer == "hidden" else 0)] = 1.0 if side == 0 else -1.0
    return x[:n], x[n:]


def _decide(weights, kv, kh, pair) -> Normalisability:
    """Both layers continuous: the reduced form of the module docstring."""
    n, m = weights.shape
    kappa = np.concatenate([kv, kh], axis=1)  # (2, n + m)
    coupling = np.zeros((n + m, n + m))
    coupling[:n, n:], coupling[n:, :n] = -weights, -weights.T
    units = np.arange(n + m)
    moves = np.isfinite(kappa).any(axis=0)  # units with at least one unbounded half-line
    free = moves & (kappa[0] == kappa[1])
    rays_of = {a: [s for s in (0, 1) if np.isfinite(kappa[s, a])] for a in units[moves & ~free]}
    # First the free units of one layer (the one with more), whose block is diagonal: exactly
    # and cheaply, q_rr - q_r1 diag(1/kappa) q_1r on the other moving units r.
    coupling[free, free] = kappa[0, free]
    first = units[free & (units < n)] if np.sum(free[:n]) >= np.sum(free[n:]) else (
        units[free & (units >= n)]
    )  # fmt: skip
    r = units[moves & ~np.isin(units, first)]
    q_r1 = coupling[np.ix_(r, first)] / kappa[0, first]
    back = -q_r1.T  # the first layer's free coordinates, minimising, given those of r
    reduced = coupling[np.ix_(r, r)] - q_r1 @ coupling[np.ix_(first, r)]
    f = np.flatnonzero(free[r])  # positions in r of the other layer's free units
    c = np.array(sorted(rays_of), dtype=int)
    cpos = np.searchsorted(r, c)
    m_ff = reduced[np.ix_(f, f)]
    curvature_scale = float(np.max(kappa[0, free], initial=0.0))
    scale = max(1.0, float(np.max(np.abs(m_ff), initial=0.0)), curvature_scale)
    condition = (
        f"{pair}: Z is finite iff the quadratic part of the energy is positive on every "
        "direction of the support (docs/units.md, 'When is Z finite'); "
    )

    def full_direction(x_r):  # coordinates on r -> a direction (v, h)
        full = np.zeros(n + m)
        full[r] = x_r
        full[first] = back @ x_r
        return full

    if f.size:
        w, u = np.linalg.eigh(m_ff)
        if w[0] <= TOLERANCE * scale or not c.size:
            x_r = np.zeros(r.size)
            x_r[f] = u[:, 0]
            return _verdict(
                w[0], scale, "positive definite", condition + "with the Gaussian units of one "
                "layer minimised out, the block of the other layer's Gaussian units (equal "
                "curvature on both half-lines; Gamma - W^T Lambda^-1 W) must be positive "
                f"definite; its smallest eigenvalue is {w[0]:.6g}", full_direction(x_r), n,
            )  # fmt: skip
    if not c.size:  # only the first layer's free units move: a positive diagonal
        low = float(np.min(kappa[0, first]))
        return _verdict(low, scale, "positive definite", condition + "it is positive definite",
                        full_direction(np.zeros(r.size)), n)  # fmt: skip
    # Minimise the remaining free coordinates out: S = R_cc - R_cf R_ff^-1 R_fc on the rays' units.
    p_cf = reduced[np.ix_(cpos, f)]
    solve = np.linalg.solve(m_ff, p_cf.T) if f.size else np.zeros((0, c.size))
    schur = reduced[np.ix_(cpos, cpos)] - p_cf @ solve
    rays = [(i, s) for i, a in enumerate(c) for s in rays_of[a]]
    unit_of = np.array([i for i, _ in rays])
    sign = np.array([1.0 if s == 0 else -1.0 for _, s in rays])
    curv = np.array([kappa[s, c[i]] for i, s in rays])
    form = np.diag(curv) + np.outer(sign, sign) * schur[np.ix_(unit_of, unit_of)]
    scale = max(scale, float(np.max(np.abs(form))))

    def embed(x):  # ray coordinates -> a direction (v, h)
        h_c = np.zeros(c.size)
        np.add.at(h_c, unit_of, sign * x)
        x_r = np.zeros(r.size)
        x_r[cpos] = h_c
        x_r[f] = -solve @ h_c
        return full_direction(x_r)

    groups = [[r for r, (i, _) in enumerate(rays) if i == j] for j in range(c.size)]
    supports = math.prod(1 + len(g) for g in groups)  # Python ints: no overflow
    cone = "strictly copositive on the rays of the support (ReLU: h >= 0; dReLU: each sign)"
    if supports <= EXACT_MAX_SUPPORTS:
        margin, x = _pareto_min(form, groups)
        return _verdict(
            margin, scale, "copositive (exact)", condition + f"the reduced form must be {cone}; "
            f"its minimum over unit directions is {margin:.6g} (all {supports} supports "
            "enumerated)", embed(x), n,
        )  # fmt: skip
    negative_part = np.minimum(form, np.diag(np.diag(form)))  # positive off-diagonals -> 0
    for name, matrix in (
        ("positive definite", form), ("negative part positive definite", negative_part),
    ):  # fmt: skip
        low = np.linalg.eigvalsh(matrix)[0]
        if low > TOLERANCE * scale:
            return Normalisability(
                True, f"sufficient: {name}", float(low),
                condition + f"the reduced form must be {cone}; it is {name} (smallest "
                f"eigenvalue {low:.6g}), which suffices",
            )  # fmt: skip
    value, x = _witness_search(form, unit_of, sign)
    if value < -TOLERANCE * scale:
        return _verdict(
            value, scale, "witness", condition + f"the reduced form must be {cone}; it is "
            f"{value:.6g} < 0 along a direction found among its eigenvectors", embed(x), n,
        )  # fmt: skip
    return Normalisability(
        None, "undecided", None,
        condition + f"the reduced form must be {cone}; with {supports} supports it is too "
        f"large for the exact test (at most {EXACT_MAX_SUPPORTS}), it is not positive "
        "definite (nor its negative part), and no violating direction was found",
    )  # fmt: skip


def _verdict(margin, scale, method, reason, direction, n):
    margin = float(margin)
    if margin > TOLERANCE * scale:
        return Normalisability(True, method, margin, reason)
    direction = direction / np.linalg.norm(direction)
    if margin < -TOLERANCE * scale:
        return Normalisability(False, method, margin, reason, (direction[:n], direction[n:]))
    return Normalisability(
        None, method, margin, reason + " (the boundary: whether Z is finite depends on the "
        "biases; treat the model as not normalisable)",
    )  # fmt: skip


def _pareto_min(form, groups):
    r"""The minimum of :math:`x^\top B x / x^\top x` over :math:`x \ge 0` using at most one
    ray of each group, and its minimiser: the smallest eigenvalue, over the admissible
    principal submatrices, that has an eigenvector of one sign (Kaplan 2000; a minimiser of
    minimal support is a simple eigenvector of its submatrix, strictly positive on it)."""
    best, best_x = np.inf, None
    choices = [[None, *g] for g in groups]
    by_size: dict[int, list] = {}
    for pick in itertools.product(*choices):
        support = [r for r in pick if r is not None]
        if support:
            by_size.setdefault(len(support), []).append(support)
    for supports in by_size.values():
        idx = np.array(supports)
        sub = form[idx[:, :, None], idx[:, None, :]]
        w, u = np.linalg.eigh(sub)  # (b, k), (b, k, k)
        positive = np.all(u > 0, axis=1) | np.all(u < 0, axis=1)  # (b, k): per eigenvector
        values = np.where(positive, w, np.inf)
        b, e = np.unravel_index(np.argmin(values), values.shape)
        if values[b, e] < best:
            best = values[b, e]
            best_x = np.zeros(form.shape[0])
            best_x[idx[b]] = np.abs(u[b, :, e])
    return best, best_x


def _witness_search(form, unit_of, sign):
    """The most negative :math:`x^\top B x / x^\top x` among the coordinate directions and
    the positive and negative parts of ``form``'s eigenvectors, each first made admissible
    (one ray per unit: the net displacement of the unit, on the ray of its sign), where the
    form is exactly :math:`E_2` (reduced)."""
    _, u = np.linalg.eigh(form)
    candidates = np.concatenate([np.eye(form.shape[0]), np.maximum(u, 0).T, np.maximum(-u, 0).T])
    net = np.zeros((candidates.shape[0], int(unit_of.max()) + 1))
    np.add.at(net.T, unit_of, (sign * candidates).T)
    candidates = np.maximum(sign * net[:, unit_of], 0.0)
    norms = np.sum(candidates**2, axis=1)
    keep = norms > 0
    candidates, norms = candidates[keep], norms[keep]
    values = np.einsum("ki,ij,kj->k", candidates, form, candidates) / norms
    k = int(np.argmin(values))
    return float(values[k]), candidates[k]


def _is_traced(params) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(params))


def require_normalisable(
    params, what: str, *, strict: bool = False, fix: str = ""
) -> Normalisability | None:
    """Refuses a model proven not normalisable (:class:`NotNormalisable`, naming the
    condition and ``fix``) and warns (:class:`NormalisabilityWarning`) when it is undecided,
    or raises then too with ``strict=True``. Traced parameters (inside ``jit``) are not
    checked."""
    if _is_traced(params):
        return None
    verdict = check_normalisable(params)
    if verdict.method == "non-finite":  # for the caller's own finiteness check to report
        return verdict
    fix = f" {fix}" if fix else ""
    if verdict.normalisable is False or (strict and verdict.normalisable is None):
        proven = "has no finite normaliser Z" if verdict.normalisable is False else (
            "may have no finite normaliser Z"
        )  # fmt: skip
        raise NotNormalisable(f"{what}: the model {proven}. {verdict.reason}.{fix}")
    if verdict.normalisable is None:
        warnings.warn(
            f"{what}: could not prove that Z is finite. {verdict.reason}.{fix}",
            NormalisabilityWarning,
            stacklevel=3,
        )
    return verdict


# --- the guard inside jit: a search for a direction along which -E grows ---------------------

#: Power-iteration steps of :func:`unbounded_direction_found`.
GUARD_ITERATIONS = 30
#: :math:`E_2` must be below this fraction of its terms' absolute sum to count as negative.
GUARD_TOLERANCE = 1e-3


def _side(curvatures, x):
    """The curvature of the half-line ``x`` lies on (``+`` for ``x >= 0``)."""
    kappa_plus, kappa_minus = curvatures
    return jnp.where(x >= 0, kappa_plus, kappa_minus)


def _best_response(curvatures, field):
    """The layer minimising :math:`\\sum_a \\kappa_a x_a^2/2 - x_a \\phi_a`: :math:`x_a =
    \\phi_a/\\kappa_a(\\operatorname{sign}\\phi_a)`, 0 on a closed half-line."""
    return field / _side(curvatures, field)


def _quadratic_part(kv, kh, weights, h):
    r""":math:`E_2(v^*(h), h)` with the best visible response :math:`v^*`, and the absolute sum
    of its terms, for hidden directions ``h`` of shape ``(k, n_hidden)``."""
    field = h @ weights.T
    v = _best_response(kv, field)
    own = jnp.where(h == 0, 0.0, _side(kh, h) * h**2)
    gain = jnp.where(field == 0, 0.0, v * field)
    return 0.5 * (jnp.sum(own, -1) - jnp.sum(gain, -1)), 0.5 * (
        jnp.sum(own, -1) + jnp.sum(jnp.abs(gain), -1)
    )


def unbounded_direction_found(params):
    r"""Whether a direction of the support with :math:`E_2 < 0` (so :math:`Z = \infty`) is found
    among the hidden unit directions :math:`\pm e_j` and the iterates of the zero-temperature
    Gibbs map :math:`h \mapsto v^*(h) \mapsto h^*(v)` from :math:`h = \pm 1` (jit-compatible;
    a scalar boolean). ``True`` is a proof; ``False`` proves nothing. For a bounded layer it
    checks that the other layer's curvatures are positive."""
    try:
        kv = params.visible_layer.tail_curvature()
        kh = params.hidden_layer.tail_curvature()
    except NotImplementedError:  # a unit type that does not say: nothing to prove with
        return False
    if kv is None or kh is None:
        curv = [jnp.asarray(k) for k in (kv or ()) + (kh or ())]
        return jnp.any(jnp.array([jnp.any(~(k > 0)) for k in curv])) if curv else False
    kv = tuple(jnp.broadcast_to(k, params.visible_bias.shape) for k in kv)
    kh = tuple(jnp.broadcast_to(k, params.hidden_bias.shape) for k in kh)
    bad_curvature = jnp.any(jnp.array([jnp.any(~(k > 0)) for k in kv + kh]))
    weights = params.weights
    # The unit directions h = +-e_j, column by column (O(n m)): E_2 = kappa_j/2 - sum_i gain.
    found = jnp.array(False)
    for sign, kappa in ((1.0, kh[0]), (-1.0, kh[1])):
        field = sign * weights  # (n, m): the visible field of h = sign e_j, column j
        gain = jnp.sum(field * _best_response(tuple(k[:, None] for k in kv), field), axis=0)
        value, size = 0.5 * (kappa - gain), 0.5 * (kappa + jnp.abs(gain))
        found |= jnp.any(jnp.isfinite(kappa) & (value < -GUARD_TOLERANCE * size))
    allowed = jnp.stack([jnp.isfinite(kh[0]), jnp.isfinite(kh[1])])  # (2, m)
    starts = jnp.stack([allowed[0].astype(weights.dtype), -allowed[1].astype(weights.dtype)])

    def step(h, _):
        v = _best_response(kv, h @ weights.T)
        h = _best_response(kh, v @ weights)
        h = h / jnp.maximum(jnp.max(jnp.abs(h), axis=-1, keepdims=True), 1e-30)
        return h, h

    _, path = jax.lax.scan(step, starts, None, length=GUARD_ITERATIONS)
    value, size = _quadratic_part(kv, kh, weights, path.reshape(-1, weights.shape[-1]))
    found |= jnp.any((value < -GUARD_TOLERANCE * size) & (size > 0))
    return bad_curvature | found
