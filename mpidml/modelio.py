"""model.h5: the trained model in scikit-learn's convention.

Datasets ``coef`` (K, D) and ``intercept`` (K,) (K = 1 for linear and binary
logistic regression); for the MLP instead ``W1`` (H1, D), ``b1`` (H1), ...,
``W{L}`` (K, H_last), ``b{L}`` (K) (scikit-learn's ``coefs_`` transposed) and
the attribute ``hidden`` (hidden layer sizes). With ``--impute mean`` / ``--standardize``
also ``impute_mean``, ``standardize_mean``, ``standardize_scale`` (D,) and, for linear
models, ``coef_raw``/``intercept_raw`` (see :mod:`mpidml.preprocess`; ``coef`` is always
the model on the transformed features). Attributes ``model``, ``l2``, ``n_features``,
``n_classes`` and ``mpidml_version``. Written to a temporary file, fsynced and
renamed into place, so a crash never leaves a half-written model.
"""

from __future__ import annotations

import os

import h5py
import numpy as np

from . import __version__
from .errors import DataError, MpidmlError
from .models import make_model


def save_model(path: str, model, params: np.ndarray, extra_arrays: dict | None = None, **attrs) -> None:
    """Write model.h5 atomically; ``extra_arrays`` adds datasets (the feature transform, see preprocess.py)."""
    if hasattr(model, "to_arrays"):  # the MLP: W1, b1, W2, b2, ... and the hidden sizes
        arrays = model.to_arrays(params)
        attrs = dict(attrs, hidden=np.asarray(model.hidden, dtype=np.int64))
    else:
        coef, intercept = model.coef_intercept(params)
        arrays = {"coef": coef, "intercept": intercept}
    arrays = dict(arrays, **(extra_arrays or {}))
    write_h5_atomically(path, arrays, {"model": model.name, "n_features": model.n_features,
                                       "n_classes": getattr(model, "n_classes", 0),
                                       "mpidml_version": __version__, **attrs})


def write_h5_atomically(path: str, arrays: dict, attrs: dict) -> None:
    """Datasets ``arrays`` and file attributes ``attrs`` into ``path``: written to a temporary
    file, flushed, fsynced and renamed, so a reader never sees a half-written model."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with h5py.File(tmp, "w") as f:
        for name, value in arrays.items():
            f.create_dataset(name, data=value)
        for key, value in attrs.items():
            f.attrs[key] = value
        f.flush()
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_model(path: str):
    """Read model.h5: returns (model, params, attrs). DataError if missing or malformed."""
    if not os.path.exists(path):
        raise DataError(f"model file not found: {path}")
    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
            if _name(attrs) == "mlp":
                return _load_mlp(path, f, attrs)
            coef = np.asarray(f["coef"][...], dtype=np.float64)
            intercept = np.asarray(f["intercept"][...], dtype=np.float64)
    except (OSError, KeyError) as e:
        raise DataError(f"{path} is not an mpidml model file (expected datasets coef and intercept): {e}") from None
    name = attrs.get("model")
    if isinstance(name, bytes):
        name = name.decode()
    if coef.ndim != 2 or intercept.shape != (coef.shape[0],):
        raise DataError(f"{path}: coef must be (K, D) and intercept (K,), got {coef.shape} and {intercept.shape}")
    model = make_model(str(name), coef.shape[1], int(attrs.get("n_classes", coef.shape[0])))
    if model.n_outputs != coef.shape[0]:
        raise DataError(f"{path}: model {name} expects {model.n_outputs} rows of coef, found {coef.shape[0]}")
    return model, model.params_from(coef, intercept), attrs


def _name(attrs) -> str:
    name = attrs.get("model")
    return name.decode() if isinstance(name, bytes) else str(name)


def _load_mlp(path, f, attrs):
    hidden = tuple(int(h) for h in np.atleast_1d(attrs.get("hidden", ())))
    try:
        arrays = {k: np.asarray(f[k][...], dtype=np.float64) for k in f.keys() if k[0] in "Wb"}
        n_features = arrays["W1"].shape[1]
        n_classes = arrays[f"W{len(hidden) + 1}"].shape[0]
        model = make_model("mlp", n_features, n_classes, ",".join(map(str, hidden)))
        return model, model.params_from_arrays(arrays), attrs
    except (KeyError, ValueError, IndexError, MpidmlError) as e:
        raise DataError(f"{path}: malformed mlp model (expected W1, b1, ... for hidden sizes {hidden}): {e}") from None
