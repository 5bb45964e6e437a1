"""Keras 3's streamed metrics on fixed batches, printed as the numbers
tests/test_metrics.py commits (KERAS_BACKEND=jax JAX_PLATFORMS=cpu, Keras 3.15.1 when
they were made). Run: python tests/keras_vectors/make_metrics.py"""
import numpy as np


def batches():
    """Two batches of binary logits and labels, and two of 7-class logits and labels."""
    rng = np.random.default_rng(11)
    zb = [rng.standard_normal((9, 1)).astype(np.float32) * 2 for _ in range(2)]
    yb = [(rng.random((9, 1)) > 0.4).astype(np.float32) for _ in range(2)]
    zk = [rng.standard_normal((6, 7)).astype(np.float32) * 2 for _ in range(2)]
    yk = [rng.integers(0, 7, 6) for _ in range(2)]
    return zb, yb, zk, yk


def main():
    import keras          # here, so that the test imports batches() without Keras
    zb, yb, zk, yk = batches()
    sig = [1.0 / (1.0 + np.exp(-z.astype(np.float64))) for z in zb]
    soft = [np.exp(z - z.max(1, keepdims=True)) / np.exp(z - z.max(1, keepdims=True)).sum(
        1, keepdims=True) for z in (z.astype(np.float64) for z in zk)]
    print("keras", keras.__version__)
    for name, metric in (("binary_accuracy", keras.metrics.BinaryAccuracy()),
                         ("precision", keras.metrics.Precision()),
                         ("recall", keras.metrics.Recall()),
                         ("auc", keras.metrics.AUC())):
        for y, p in zip(yb, sig):
            metric.update_state(y, p)
        print(name, float(metric.result()))
    for name, metric in (("auc_softmax", keras.metrics.AUC()),
                         ("precision_softmax", keras.metrics.Precision())):
        for y, p in zip(yk, soft):
            metric.update_state(np.eye(7)[y], p)
        print(name, float(metric.result()))
    metric = keras.metrics.SparseTopKCategoricalAccuracy(k=5)
    for y, p in zip(yk, soft):
        metric.update_state(y, p)
    print("sparse_top_k", float(metric.result()))


if __name__ == "__main__":
    main()
