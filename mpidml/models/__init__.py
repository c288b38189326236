"""Models: parameter layout, initial values, and loss + gradient sums on a shard."""

from ..errors import ConfigError
from .base import Model
from .linear import LinearRegression, LogisticRegression
from .mlp import MLPClassifier, parse_hidden
from .softmax import SoftmaxRegression

MODELS = {"linear": LinearRegression, "logistic": LogisticRegression, "softmax": SoftmaxRegression, "mlp": MLPClassifier}


def make_model(name: str, n_features: int, n_classes: int = 2, hidden="64") -> Model:
    """Build a model by name. ``n_classes`` is used by softmax and mlp, ``hidden`` by mlp."""
    if name == "mlp":
        if n_classes < 2:
            raise ConfigError(f"mlp needs at least 2 classes, found {n_classes}")
        return MLPClassifier(n_features, n_classes, hidden or "64")
    if name == "softmax":
        if n_classes < 2:
            raise ConfigError(f"softmax needs at least 2 classes, found {n_classes}")
        return SoftmaxRegression(n_features, n_classes)
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    return MODELS[name](n_features)


__all__ = ["Model", "MLPClassifier", "parse_hidden", "LinearRegression", "LogisticRegression", "SoftmaxRegression", "make_model", "MODELS"]
