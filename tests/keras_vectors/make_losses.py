"""Keras 3's weighted and label-smoothed cross-entropy on fixed batches, printed as the
numbers tests/test_label_smoothing.py commits (KERAS_BACKEND=jax JAX_PLATFORMS=cpu,
Keras 3.15.1 when they were made). Run: python tests/keras_vectors/make_losses.py"""
import numpy as np

import keras

Z = np.array([[2.0], [-1.0], [0.5], [-3.0]], np.float32)          # logits
Y = np.array([[1.0], [0.0], [0.0], [1.0]], np.float32)
W = np.array([0.5, 2.0, 0.0, 1.5], np.float32)
ZS = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [2.5, 0.5, 0.5]], np.float32)
YS = np.array([1, 2, 0])

p = 1.0 / (1.0 + np.exp(-Z.astype(np.float64)))
ps = np.exp(ZS.astype(np.float64))
ps /= ps.sum(axis=1, keepdims=True)
onehot = np.eye(3, dtype=np.float32)[YS]
bce = keras.losses.BinaryCrossentropy
cce = keras.losses.CategoricalCrossentropy
print("keras", keras.__version__)
print("bce ls=0.1", float(bce(label_smoothing=0.1)(Y, p)))
print("bce ls=0.1 weighted", float(bce(label_smoothing=0.1)(Y, p, sample_weight=W)))
print("cce ls=0.2", float(cce(label_smoothing=0.2)(onehot, ps)))
print("cce weighted", float(cce()(onehot, ps, sample_weight=np.array([3.0, 0.25, 1.0]))))
