"""Streamed compiled metrics (fastconv/models/metrics.py) against float64 formulas and
against Keras 3's values on fixed batches (tests/keras_vectors/make_metrics.py printed
them with Keras 3.15.1), and in compile/fit/evaluate logs and history."""
import importlib.util
import os

import numpy as np
import pytest

from fastconv import Sequential
from fastconv import layers as L
from fastconv.models import metrics as M

HERE = os.path.dirname(os.path.abspath(__file__))


def _batches():
    """The fixed batches of make_metrics.py (its batches() needs no Keras)."""
    spec = importlib.util.spec_from_file_location(
        "make_metrics", os.path.join(HERE, "keras_vectors", "make_metrics.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.batches()


KERAS = {"binary_accuracy": 0.6666666865348816, "precision": 0.7777777910232544,
         "recall": 0.6363636255264282, "auc": 0.6623376607894897,
         "auc_softmax": 0.33796295523643494, "precision_softmax": 0.1666666716337204,
         "sparse_top_k": 0.5833333134651184}


def _stream(name, labels, logits, head):
    s = M.make([name])[name]
    for y, z in zip(labels, logits):
        s.update(y, z, head)
    return s.result()


def test_keras_values_on_fixed_batches():
    zb, yb, zk, yk = _batches()
    for name in ("binary_accuracy", "precision", "recall", "auc"):
        assert _stream(name, yb, zb, "sigmoid") == pytest.approx(KERAS[name], abs=1e-6), name
    assert _stream("auc", yk, zk, "softmax") == pytest.approx(KERAS["auc_softmax"], abs=1e-6)
    assert _stream("precision", yk, zk, "softmax") == pytest.approx(
        KERAS["precision_softmax"], abs=1e-6)
    assert _stream("sparse_top_k_categorical_accuracy", yk, zk, "softmax") == \
        pytest.approx(KERAS["sparse_top_k"], abs=1e-6)


def test_float64_formulas():
    zb, yb, _, _ = _batches()
    p = 1.0 / (1.0 + np.exp(-np.concatenate(zb).astype(np.float64)[:, 0]))
    y = np.concatenate(yb)[:, 0] > 0.5
    pred = p > 0.5
    tp, fp, fn = (pred & y).sum(), (pred & ~y).sum(), (~pred & y).sum()
    assert _stream("precision", yb, zb, "sigmoid") == tp / (tp + fp)
    assert _stream("recall", yb, zb, "sigmoid") == tp / (tp + fn)
    assert _stream("binary_accuracy", yb, zb, "sigmoid") == np.mean(pred == y)
    # AUC: ROC with Keras's 200 thresholds and interpolation, written out
    th = np.array([-1e-7] + [(i + 1) / 199 for i in range(198)] + [1 + 1e-7])
    tpr = np.array([(p[y] > t).sum() / y.sum() for t in th])
    fpr = np.array([(p[~y] > t).sum() / (~y).sum() for t in th])
    want = np.sum((fpr[:-1] - fpr[1:]) * (tpr[:-1] + tpr[1:]) / 2)
    assert _stream("auc", yb, zb, "sigmoid") == pytest.approx(want, rel=1e-12)
    # an epoch's value is the whole epoch's counts, not the mean of the batches'
    per_batch = [_stream("precision", [y_], [z_], "sigmoid") for y_, z_ in zip(yb, zb)]
    assert _stream("precision", yb, zb, "sigmoid") != pytest.approx(np.mean(per_batch))


def test_top_k_tie_rule():
    s = M.TopK("sparse_top_k_categorical_accuracy", k=2)
    s.update(np.array([0, 1]), np.array([[1.0, 1.0, 1.0], [3.0, 2.0, 2.0]]), "softmax")
    assert s.result() == 1.0     # ties straddling the boundary are in the top k (TF's rule)


def test_states_of_slices_add_up_to_the_whole_batch():
    """What fastconv.distributed sums across ranks: each stream's counts of two halves of
    every batch, added (add_states of state_of), give the whole batches' result exactly."""
    zb, yb, zk, yk = _batches()
    cases = [(["binary_accuracy", "precision", "recall", "auc"], yb, zb, "sigmoid"),
             (["auc", "precision", "sparse_top_k_categorical_accuracy"], yk, zk, "softmax")]
    for names, labels, logits, head in cases:
        whole, total = M.make(names), M.make(names)
        for y, z in zip(labels, logits):
            for s in whole.values():
                s.update(y, z, head)
            cut = len(y) // 2
            for part in (slice(0, cut), slice(cut, None)):
                rank = M.make(names)
                for s in rank.values():
                    s.update(y[part], z[part], head)
                M.add_states(total, M.state_of(rank))
        assert M.state_of(total).size == M.state_of(whole).size > len(names)
        for n in names:
            assert total[n].result() == whole[n].result(), n
    s = M.make(["precision"])["precision"]
    with pytest.raises(ValueError, match=r"metric 'precision': a state of 2 counts, "
                                         r"expected 3"):
        s.add_state(np.zeros(2))


@pytest.mark.parametrize("device", ["reference", "cpu"])
def test_compiled_metrics_in_fit_and_evaluate(device):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 3)).astype(np.float32)
    y = (x[:, 0] + 0.3 * rng.standard_normal(20) > 0).astype(np.float32)
    m = Sequential([L.Dense(1, input_shape=(3,)), L.Activation("sigmoid")], device=device,
                   seed=0)
    names = ["accuracy", "binary_accuracy", "precision", "recall", "auc"]
    m.compile(optimizer="sgd", loss="binary_crossentropy", metrics=names)
    h = m.fit(x, y, batch_size=6, epochs=2, verbose=0, validation_data=(x, y))
    assert set(names) <= set(h.history) and {f"val_{n}" for n in names} <= set(h.history)
    logs = m.evaluate(x, y, batch_size=7, return_dict=True)
    p = m.predict(x)[:, 0].astype(np.float64)
    yb = y > 0.5
    pred = p > 0.5
    assert logs["binary_accuracy"] == logs["accuracy"] == pytest.approx(np.mean(pred == yb))
    tp = (pred & yb).sum()
    assert logs["precision"] == pytest.approx(tp / max(pred.sum(), 1))
    assert logs["recall"] == pytest.approx(tp / yb.sum())
    logits = np.log(p / (1 - p)).reshape(-1, 1)
    assert logs["auc"] == pytest.approx(_stream("auc", [y.reshape(-1, 1)], [logits],
                                                "sigmoid"), abs=1e-6)
    mk = Sequential([L.Dense(7, input_shape=(3,)), L.Activation("softmax")], device=device,
                    seed=0)
    mk.compile(optimizer="sgd", loss="sparse_categorical_crossentropy",
               metrics=["sparse_top_k_categorical_accuracy"])
    yk = rng.integers(0, 7, 20)
    got = mk.evaluate(x, yk, batch_size=8, return_dict=True)
    z = mk.predict(x)
    rank = (z > z[np.arange(20), yk][:, None]).sum(axis=1)
    assert got["sparse_top_k_categorical_accuracy"] == pytest.approx(np.mean(rank < 5))
    with pytest.raises(ValueError, match="unknown metric 'f1'"):
        mk.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["f1"])
