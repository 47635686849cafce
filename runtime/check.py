"""Validation of arguments: covariances (shape, finiteness, symmetry, positive semi-definiteness),
numbers and a rule's parameters."""
import math

import numpy as np

#: relative tolerance for asymmetry and for negative principal minors (rounding, not data)
TOL = 1e-10
#: largest variance accepted: the averages multiply up to three variances, which must stay finite
MAX_VARIANCE = 1e100


def covariance(C, n, what="covariance"):
    """Check C of shape (..., n, n) and return its upper-triangle entries c11, c12, ..., cnn.

    Raises ValueError naming the problem: not numeric, wrong trailing shape, NaN or inf,
    not symmetric, a negative variance, or not positive semi-definite.
    """
    if np.iscomplexobj(C):
        raise ValueError(f"{what}: covariance must be real, got a complex array")
    try:
        C = np.asarray(C, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: covariance must be a numeric array") from None
    if C.ndim < 2 or C.shape[-2:] != (n, n):
        raise ValueError(f"{what}: expected covariances of shape (..., {n}, {n}), got {C.shape}")
    if not np.all(np.isfinite(C)):
        raise ValueError(f"{what}: covariance contains NaN or inf")
    diag = [C[..., i, i] for i in range(n)]
    for i in range(n):
        if np.any(diag[i] < 0):
            raise ValueError(f"{what}: negative variance C[..., {i}, {i}]; not positive semi-definite")
        if np.any(diag[i] > MAX_VARIANCE):
            raise ValueError(f"{what}: variance C[..., {i}, {i}] = {np.max(diag[i]):.3g} is beyond the representable "
                             f"range of these averages (at most {MAX_VARIANCE:.0e}: products of variances overflow)")
    entries = {}
    for i in range(n):
        for j in range(i, n):
            if i == j:
                entries[i, j] = diag[i]
                continue
            scale = TOL * (diag[i] + diag[j]) + 1e-300
            if np.any(np.abs(C[..., i, j] - C[..., j, i]) > scale):
                raise ValueError(f"{what}: covariance is not symmetric (C[..., {i}, {j}] != C[..., {j}, {i}])")
            entries[i, j] = 0.5 * (C[..., i, j] + C[..., j, i])
    _check_psd(entries, diag, n, what)
    return tuple(entries[i, j] for i in range(n) for j in range(i, n))


def _check_psd(e, diag, n, what):
    """All principal minors non-negative (up to rounding) for n <= 3; eigenvalues for n > 3."""
    for i in range(n):
        for j in range(i + 1, n):
            if np.any(e[i, i] * e[j, j] - e[i, j] ** 2 < -TOL * e[i, i] * e[j, j] - 1e-300):
                raise ValueError(f"{what}: covariance is not positive semi-definite "
                                 f"(|correlation| > 1 between variables {i + 1} and {j + 1})")
    if n == 3:
        det = (e[0, 0] * (e[1, 1] * e[2, 2] - e[1, 2] ** 2) - e[0, 1] * (e[0, 1] * e[2, 2] - e[1, 2] * e[0, 2])
               + e[0, 2] * (e[0, 1] * e[1, 2] - e[1, 1] * e[0, 2]))
        if np.any(det < -TOL * diag[0] * diag[1] * diag[2] - 1e-300):
            raise ValueError(f"{what}: covariance is not positive semi-definite (negative determinant)")
    elif n > 3:
        M = np.empty(np.shape(diag[0]) + (n, n))
        for (i, j), val in e.items():
            M[..., i, j] = M[..., j, i] = val
        lam = np.linalg.eigvalsh(M)
        if np.any(lam[..., 0] < -TOL * np.maximum(lam[..., -1], 0) - 1e-300):
            raise ValueError(f"{what}: covariance is not positive semi-definite (negative eigenvalue)")


def number(value, what):
    """value as a finite float, or ValueError naming `what`."""
    if isinstance(value, (bool, str, bytes)):
        raise ValueError(f"{what} must be a number, got {value!r}")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return value


def rule_params(rule, defaults, given):
    """The parameters of `rule` ({name: default}) updated with `given` (a dict or None), each a
    finite number; ValueError for a parameter the rule does not have."""
    if given is None:
        return dict(defaults)
    if not isinstance(given, dict):
        raise ValueError(f"rule_params must be a dict of parameter values, got {given!r}")
    out = dict(defaults)
    for name, value in given.items():
        if name not in defaults:
            raise ValueError(f"rule {rule!r} has no parameter {name!r}; its parameters: {', '.join(defaults) or 'none'}")
        out[name] = number(value, f"rule parameter {name}")
    return out
