"""The MLP: kernels vs a NumPy reference and finite differences, config, model.h5, digits accuracy."""

import h5py
import numpy as np
import pytest
from mpi4py import MPI

from mpidml.comm import Context
from mpidml.config import TrainConfig
from mpidml.errors import ConfigError
from mpidml.models import MLPClassifier, make_model, parse_hidden

from helpers import shard_of, train


def numpy_forward_backward(X, y, sw, params, model):
    """Independent reference: matrix forward pass, softmax, back-propagation. Returns (loss sum, grad sum)."""
    Ws = [W.copy() for W in model.weights(params)]
    bs = [b.copy() for b in model.biases(params)]
    acts = [X.astype(np.float64)]
    for l, (W, b) in enumerate(zip(Ws, bs)):
        z = acts[-1] @ W.T + b
        acts.append(np.maximum(z, 0.0) if l < len(Ws) - 1 else z)
    Z = acts[-1]
    m = Z.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(Z - m).sum(axis=1))
    loss = np.dot(sw, lse - Z[np.arange(len(y)), y])
    P = np.exp(Z - lse[:, None])
    delta = P.copy()
    delta[np.arange(len(y)), y] -= 1.0
    delta *= sw[:, None]
    gW, gb = [None] * len(Ws), [None] * len(Ws)
    for l in range(len(Ws) - 1, -1, -1):
        gW[l] = delta.T @ acts[l]
        gb[l] = delta.sum(axis=0)
        if l > 0:
            delta = (delta @ Ws[l]) * (acts[l] > 0)
    grad = np.zeros_like(params)
    for l, (W, b) in enumerate(zip(model.weights(grad), model.biases(grad))):
        W[...] = gW[l]
        b[...] = gb[l]
    return loss, grad


def make_data(n=57, d=6, k=4, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    y = rng.integers(0, k, n).astype(np.int64)
    sw = rng.uniform(0.2, 2.0, n)
    return X, y, sw


@pytest.mark.parametrize("hidden", ["5", "7,3"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("weighted", [False, True])
def test_kernel_matches_numpy_reference(hidden, dtype, weighted):
    X, y, sw = make_data(dtype=dtype)
    model = MLPClassifier(X.shape[1], 4, hidden)
    params = model.init_params(seed=3)
    params[model.penalized.stop:] = np.random.default_rng(1).standard_normal(params.size - model.penalized.stop) * 0.1
    rows = np.array([0, 1, 2, 5, 9, 10, 11, 40, 3, 3], dtype=np.int64)  # runs, gaps, repeats
    shard = shard_of(X, y, 0, 1, sw if weighted else None)
    grad = np.zeros(model.n_params)
    loss = model.loss_grad(shard, params, rows, grad, True)
    w = sw[rows] if weighted else np.ones(rows.size)
    loss_ref, grad_ref = numpy_forward_backward(X[rows], y[rows], w, params, model)
    assert loss == pytest.approx(loss_ref, rel=1e-12)
    np.testing.assert_allclose(grad, grad_ref, rtol=1e-10, atol=1e-12)
    # Without the loss: same gradient, loss 0; the kernel adds into grad.
    grad2 = np.ones(model.n_params)
    assert model.loss_grad(shard, params, rows, grad2, False) == 0.0
    np.testing.assert_allclose(grad2 - 1.0, grad_ref, rtol=1e-10, atol=1e-12)
    # Probabilities: softmax of the reference logits.
    proba = model.predict_proba(shard, params, rows)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    assert np.all(np.argmax(proba, axis=1) == model.predict_labels(shard, params, rows))


@pytest.mark.parametrize("hidden", ["6", "5,4"])
def test_gradient_matches_finite_differences(hidden):
    X, y, sw = make_data(n=40, d=5, k=3, seed=2)
    model = MLPClassifier(5, 3, hidden)
    params = model.init_params(seed=1)
    params[model.penalized.stop:] = 0.05
    shard = shard_of(X, y, 0, 1, sw)
    rows = np.arange(len(y), dtype=np.int64)

    def f(p):
        return model.loss_grad(shard, p, rows, np.zeros(model.n_params), True)

    grad = np.zeros(model.n_params)
    model.loss_grad(shard, params, rows, grad, True)
    h = 1e-6
    fd = np.empty_like(params)
    for i in range(params.size):
        e = np.zeros_like(params)
        e[i] = h
        fd[i] = (f(params + e) - f(params - e)) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-6 * np.abs(fd).max())


def test_layout_penalizes_weights_not_biases():
    model = MLPClassifier(64, 10, "128,64")
    n_w = 64 * 128 + 128 * 64 + 64 * 10
    assert model.n_params == n_w + 128 + 64 + 10
    assert model.penalized == slice(0, n_w)
    p = np.arange(model.n_params, dtype=np.float64)
    W = model.weights(p)
    assert [w.shape for w in W] == [(128, 64), (64, 128), (10, 64)]
    assert model.biases(p)[0][0] == n_w


def test_init_is_seeded_he_and_identical_for_equal_seeds():
    model = MLPClassifier(200, 3, "300")
    a, b, c = model.init_params(5), model.init_params(5), model.init_params(6)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    W1, W2 = model.weights(a)
    assert np.std(W1) == pytest.approx(np.sqrt(2 / 200), rel=0.02)
    assert np.std(W2) == pytest.approx(np.sqrt(1 / 300), rel=0.1)
    assert not a[model.penalized.stop:].any()
    # The convex models keep their zero start whatever the seed.
    assert not make_model("softmax", 4, 3).init_params(7).any()


def test_hidden_option_is_parsed_and_validated():
    assert parse_hidden("64") == (64,) and parse_hidden(" 128, 64 ") == (128, 64)
    for bad in ("", "0", "64,32,16", "a", "-3"):
        with pytest.raises(ConfigError):
            parse_hidden(bad)
    TrainConfig(data="d", out="o", model="mlp", hidden="32,16").validate()
    TrainConfig(data="d", out="o", model="mlp").validate()  # default 64
    with pytest.raises(ConfigError, match="--hidden"):
        TrainConfig(data="d", out="o", model="mlp", hidden="1,2,3").validate()
    with pytest.raises(ConfigError, match="mlp only"):
        TrainConfig(data="d", out="o", model="softmax", hidden="8").validate()


def test_model_file_round_trip(tmp_path):
    from mpidml.modelio import load_model, save_model

    model = MLPClassifier(6, 4, "5,3")
    params = model.init_params(2)
    params[model.penalized.stop:] = np.arange(12) * 0.1
    path = str(tmp_path / "model.h5")
    save_model(path, model, params, l2=1e-3)
    with h5py.File(path) as f:
        assert sorted(f.keys()) == ["W1", "W2", "W3", "b1", "b2", "b3"]
        assert f["W1"].shape == (5, 6) and f["W3"].shape == (4, 3) and list(f.attrs["hidden"]) == [5, 3]
        np.testing.assert_array_equal(f["b2"][...], params[model.penalized.stop + 5:model.penalized.stop + 8])
    loaded, p2, attrs = load_model(path)
    assert isinstance(loaded, MLPClassifier) and loaded.hidden == (5, 3) and loaded.n_classes == 4
    np.testing.assert_array_equal(p2, params)
    assert attrs["l2"] == 1e-3


def digits_split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y.astype(np.int64), test_size=0.5, random_state=0, stratify=y)
    mu, sd = Xtr.mean(axis=0), Xtr.std(axis=0)
    sd[sd == 0] = 1.0
    return (Xtr - mu) / sd, (Xte - mu) / sd, ytr, yte


def test_mlp_beats_linear_softmax_on_digits():
    Xtr, Xte, ytr, yte = digits_split()
    ctx = Context(MPI.COMM_SELF)
    test_rows = np.arange(len(yte), dtype=np.int64)
    test_shard = shard_of(Xte, yte, 0, 1)

    # The linear softmax at its best L2 on the test set (generous to the baseline).
    acc_softmax = 0.0
    for l2 in (1e-2, 1e-3, 1e-4):
        sm_params, sm = train(ctx, Xtr, ytr, model="softmax", optimizer="lbfgs", l2=l2, tol=1e-8, max_iter=500)
        acc_softmax = max(acc_softmax, np.mean(sm.model.predict_labels(test_shard, sm_params, test_rows) == yte))
    mlp_params, mlp = train(ctx, Xtr, ytr, model="mlp", hidden="64", optimizer="adam", lr=0.01, batch_size=64,
                            epochs=30, l2=1e-3, seed=0)
    acc_mlp = np.mean(mlp.model.predict_labels(test_shard, mlp_params, test_rows) == yte)
    print(f"digits test accuracy: softmax {acc_softmax:.4f}, mlp {acc_mlp:.4f}")
    assert acc_softmax > 0.9
    assert acc_mlp > acc_softmax
