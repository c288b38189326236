"""Matrix-factorization kernels: predictions, squared-error sums, ALS normal equations, SGD.

Conventions (see mpidml.models.mf for the objective):

* ``user``, ``item``: int64 (n,) ids of n ratings; ``rating``: float64 (n,).
* ``ublock``: float64 (U, k+1), row u = [p_u (k factors), b_u (bias)];
  ``iblock``: float64 (I, k+1), row i = [q_i, c_i]. ``mu``: the global mean.
* Prediction: r_hat = mu + b_u + c_i + p_u . q_i.
* ALS systems: for the entities being solved (users, or items), ``systems`` is
  float64 (n_ent, S) with T = (k+1)(k+2)/2 and S = T + k+1: the first T values
  of a row are the upper triangle of the symmetric matrix A_e, packed row by row
  (A[a, b] for a <= b at ``packed_index(a, b, k+1)``), the last k+1 the
  right-hand side g_e. For a user u with the item block fixed,
  x = [q_i, 1] and t = r - mu - c_i over u's ratings: A_u = sum x x^T,
  g_u = sum t x (and symmetrically for items with the user block fixed).
* Kernels ADD into their outputs unless the docstring says "writes"; no
  allocation proportional to the data, no regularisation except where a
  ``ridge`` argument says so.
"""
import numpy as np
from numba import njit


@njit(cache=True, nogil=True, fastmath=False)
def packed_index(a, b, k1):
    """Position of A[a, b] (a <= b) in the packed upper triangle of a k1 x k1 matrix."""
    return a * k1 - (a * (a - 1)) // 2 + (b - a)


@njit(cache=True, nogil=True, fastmath=False)
def mf_predict(user, item, mu, ublock, iblock, out):
    """Writes out[j] = mu + b_u + c_i + p_u . q_i for every rating j (out float64 (n,))."""
    k = ublock.shape[1] - 1
    for j in range(user.shape[0]):
        u = user[j]
        i = item[j]
        z = mu + ublock[u, k] + iblock[i, k]
        for f in range(k):
            z += ublock[u, f] * iblock[i, f]
        out[j] = z


@njit(cache=True, nogil=True, fastmath=False, inline="always")
def _residual(r, mu, U, a, V, c, k):
    """e = r - r_hat for user row U[a] and item row V[c] ([factors (k), bias]), subtracting
    mu, the biases, then each factor product in turn (the rounding every caller shares)."""
    e = r - mu - U[a, k] - V[c, k]
    for f in range(k):
        e -= U[a, f] * V[c, f]
    return e


@njit(cache=True, nogil=True, fastmath=False)
def mf_loss(user, item, rating, mu, ublock, iblock):
    """Returns sum_j 0.5 * (r_j - r_hat_j)**2 over all n ratings (no regularisation)."""
    k = ublock.shape[1] - 1
    total = 0.0
    for j in range(user.shape[0]):
        e = _residual(rating[j], mu, ublock, user[j], iblock, item[j], k)
        total += 0.5 * e * e
    return total


@njit(cache=True, nogil=True, fastmath=False)
def mf_normal_equations(ent, other, rating, mu, fixed, systems):
    """ADD each rating's terms to the ALS system of its entity (one pass over the ratings).

    ent: int64 (n,) ids of the entities being solved (rows of ``systems``);
    other: int64 (n,) ids into ``fixed`` (n_other, k+1) = [factors, bias] of the
    fixed side; systems: float64 (n_ent, (k+1)(k+2)/2 + k+1) (packed layout in the
    module docstring). With x = [fixed[o, :k], 1] and t = r - mu - fixed[o, k]:
    A_e += x x^T, g_e += t x.
    """
    k1 = fixed.shape[1]
    k = k1 - 1
    rhs = (k1 * (k1 + 1)) // 2
    for j in range(ent.shape[0]):
        e = ent[j]
        o = other[j]
        t = rating[j] - mu - fixed[o, k]
        p = 0  # packed position of A[a, b], walking the upper triangle row by row
        for a in range(k1):
            xa = fixed[o, a] if a < k else 1.0
            systems[e, rhs + a] += t * xa
            for b in range(a, k1):
                xb = fixed[o, b] if b < k else 1.0
                systems[e, p] += xa * xb
                p += 1


@njit(cache=True, nogil=True, fastmath=False)
def mf_solve_systems(systems, ridge, out):
    """Writes out[e] = (A_e + ridge I)^{-1} g_e for every row e (Cholesky; A_e's upper triangle).

    systems: float64 (n, (k+1)(k+2)/2 + k+1) as built by mf_normal_equations; ridge > 0
    (makes every system positive definite); out: float64 (n, k+1). Returns the
    number of systems whose Cholesky factorisation met a non-positive pivot (0 when
    all were solved; such rows are left unchanged).
    """
    n = systems.shape[0]
    k1 = out.shape[1]
    rhs = (k1 * (k1 + 1)) // 2
    L = np.empty((k1, k1))
    z = np.empty(k1)
    failed = 0
    for e in range(n):
        ok = True
        # Cholesky M = L L^T of M = A + ridge I; M[a, b] (b <= a) is the packed A[b, a].
        for a in range(k1):
            for b in range(a + 1):
                s = systems[e, packed_index(b, a, k1)] + (ridge if a == b else 0.0)
                for m in range(b):
                    s -= L[a, m] * L[b, m]
                if a == b:
                    if not (s > 0.0):
                        ok = False
                        break
                    L[a, a] = np.sqrt(s)
                else:
                    L[a, b] = s / L[b, b]
            if not ok:
                break
        if not ok:
            failed += 1
            continue
        for a in range(k1):  # L z = g
            s = systems[e, rhs + a]
            for m in range(a):
                s -= L[a, m] * z[m]
            z[a] = s / L[a, a]
        for a in range(k1 - 1, -1, -1):  # L^T theta = z
            s = z[a]
            for m in range(a + 1, k1):
                s -= L[m, a] * out[e, m]
            out[e, a] = s / L[a, a]
    return failed


@njit(cache=True, nogil=True, fastmath=False)
def mf_sgd_gradients(upos, ipos, rating, mu, urows, irows, ucoef, icoef, ugrad, igrad):
    """Mini-batch gradient sums of the per-rating objective; returns sum_j 0.5 e_j**2.

    The batch's m ratings refer to rows of ``urows`` (nu, k+1) and ``irows``
    (ni, k+1) (the batch's distinct users and items, [factors, bias]) through
    ``upos``/``ipos`` int64 (m,). Per rating j with e_j = r_j - r_hat_j the loss is
    0.5 e_j**2 + 0.5 ucoef[a] ||urows[a]||^2 + 0.5 icoef[c] ||irows[c]||^2
    (a = upos[j], c = ipos[j]; ucoef = l2 N / n_u and icoef = l2 N / n_i make the
    per-rating penalties add up to (l2/2)||params||^2 over all N ratings).
    Writes (zeroes first) ugrad (nu, k+1) and igrad (ni, k+1) with the SUMS over
    the batch of those losses' gradients, all taken at the rows as given.
    """
    k1 = urows.shape[1]
    k = k1 - 1
    ugrad[:, :] = 0.0
    igrad[:, :] = 0.0
    total = 0.0
    for j in range(upos.shape[0]):
        a = upos[j]
        c = ipos[j]
        e = _residual(rating[j], mu, urows, a, irows, c, k)
        total += 0.5 * e * e
        for f in range(k):
            ugrad[a, f] += ucoef[a] * urows[a, f] - e * irows[c, f]
            igrad[c, f] += icoef[c] * irows[c, f] - e * urows[a, f]
        ugrad[a, k] += ucoef[a] * urows[a, k] - e
        igrad[c, k] += icoef[c] * irows[c, k] - e
    return total
