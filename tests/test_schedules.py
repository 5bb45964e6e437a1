"""Learning-rate schedules (fastconv.optimizers.schedules) against float64 references
written from Keras 3's documented formulas, at the steps an off-by-one would move
(0, 1, decay_steps, 10 * decay_steps, the warmup boundary); their argument checks;
their use as an optimizer's learning_rate (the rate of step t is schedule(t - 1), fed
to the kernel) and their round trip through get_config and a saved model."""
import math

import numpy as np
import pytest

import fastconv
from fastconv import layers as L
from fastconv import optimizers as O
from fastconv.optimizers import schedules as S

RTOL = 1e-12    # both sides are float64 on the host; only the order of operations differs


def ref_exponential(step, lr0, ds, rate, staircase):
    p = np.float64(step) / np.float64(ds)
    return lr0 * np.power(rate, np.floor(p) if staircase else p)


def ref_inverse_time(step, lr0, ds, rate, staircase):
    p = np.float64(step) / np.float64(ds)
    return lr0 / (1.0 + rate * (np.floor(p) if staircase else p))


def ref_cosine(step, lr0, ds, alpha=0.0, target=None, warmup=0):
    step = np.float64(step)
    if target is None:
        s = min(step, ds)
        return lr0 * ((1 - alpha) * 0.5 * (1 + np.cos(np.pi * s / ds)) + alpha)
    s = min(step, ds + warmup)
    if s < warmup:
        return lr0 + (target - lr0) * s / warmup
    s -= warmup
    return target * ((1 - alpha) * 0.5 * (1 + np.cos(np.pi * s / ds)) + alpha)


DS = 7
STEPS = (0, 1, DS - 1, DS, DS + 1, 10 * DS)


@pytest.mark.parametrize("staircase", [False, True])
def test_exponential_decay(staircase):
    s = S.ExponentialDecay(0.1, DS, 0.5, staircase=staircase)
    for t in STEPS:
        assert s(t) == pytest.approx(ref_exponential(t, 0.1, DS, 0.5, staircase), rel=RTOL)
    assert s(0) == 0.1
    # staircase: constant within a decay period, halved exactly at its end
    if staircase:
        assert s(DS - 1) == 0.1 and s(DS) == 0.05 and s(10 * DS) == 0.1 * 0.5 ** 10
    else:
        assert s(DS) == pytest.approx(0.05, rel=RTOL) and s(1) < 0.1


@pytest.mark.parametrize("staircase", [False, True])
def test_inverse_time_decay(staircase):
    s = S.InverseTimeDecay(0.2, DS, 0.5, staircase=staircase)
    for t in STEPS:
        assert s(t) == pytest.approx(ref_inverse_time(t, 0.2, DS, 0.5, staircase), rel=RTOL)
    assert s(DS) == pytest.approx(0.2 / 1.5, rel=RTOL)
    assert s(10 * DS) == pytest.approx(0.2 / 6.0, rel=RTOL)


def test_piecewise_constant_decay_boundaries_belong_to_the_left_interval():
    s = S.PiecewiseConstantDecay([DS, 10 * DS], [1.0, 0.5, 0.1])
    expect = {0: 1.0, 1: 1.0, DS - 1: 1.0, DS: 1.0, DS + 1: 0.5, 10 * DS: 0.5,
              10 * DS + 1: 0.1, 1000: 0.1}
    assert {t: s(t) for t in expect} == expect


@pytest.mark.parametrize("alpha", [0.0, 0.1])
def test_cosine_decay_without_warmup(alpha):
    s = S.CosineDecay(0.1, DS, alpha=alpha)
    for t in STEPS:
        assert s(t) == pytest.approx(ref_cosine(t, 0.1, DS, alpha), rel=RTOL, abs=1e-15)
    assert s(0) == 0.1
    assert s(DS) == pytest.approx(0.1 * alpha, abs=1e-15)    # floor reached at decay_steps
    assert s(10 * DS) == s(DS)                                # and held


@pytest.mark.parametrize("alpha", [0.0, 0.2])
def test_cosine_decay_with_warmup(alpha):
    W = 5
    s = S.CosineDecay(0.0, DS, alpha=alpha, warmup_target=0.1, warmup_steps=W)
    for t in (0, 1, W - 1, W, W + 1, W + DS - 1, W + DS, 10 * DS):
        assert s(t) == pytest.approx(ref_cosine(t, 0.0, DS, alpha, 0.1, W), rel=RTOL,
                                     abs=1e-15), t
    assert s(0) == 0.0
    assert s(W - 1) == pytest.approx(0.1 * (W - 1) / W, rel=RTOL)   # linear ramp
    assert s(W) == pytest.approx(0.1, rel=RTOL)                     # the target at W
    assert s(W + 1) < s(W)                                          # decaying after
    assert s(W + DS) == pytest.approx(0.1 * alpha, abs=1e-15)


@pytest.mark.parametrize("make,message", [
    (lambda: S.ExponentialDecay(0.1, 0, 0.5), r"ExponentialDecay: `decay_steps` must be > 0, "
                                               r"received decay_steps=0"),
    (lambda: S.ExponentialDecay("a", 1, 0.5), r"`initial_learning_rate` must be a finite "
                                               r"number, received initial_learning_rate='a'"),
    (lambda: S.ExponentialDecay(0.1, 1, 0.5, staircase=1), r"`staircase` must be True or "
                                                            r"False, received staircase=1"),
    (lambda: S.InverseTimeDecay(0.1, -2, 0.5), r"InverseTimeDecay: `decay_steps` must be > 0, "
                                                r"received decay_steps=-2"),
    (lambda: S.InverseTimeDecay(0.1, 2, -0.5), r"`decay_rate` must be >= 0.0, received "
                                                r"decay_rate=-0.5"),
    (lambda: S.PiecewiseConstantDecay([1, 2], [1.0, 0.5]), r"`values` must be a list with "
                                                           r"len\(boundaries\) \+ 1 = 3"),
    (lambda: S.PiecewiseConstantDecay([2, 1], [1.0, 0.5, 0.1]), r"`boundaries` must be "
                                                                r"strictly increasing"),
    (lambda: S.CosineDecay(0.1, 10, warmup_steps=-1), r"CosineDecay: `warmup_steps` must be "
                                                      r"an int >= 0, received warmup_steps=-1"),
    (lambda: S.CosineDecay(0.1, 10, alpha=float("nan")), r"`alpha` must be a finite number, "
                                                         r"received alpha=nan"),
    (lambda: S.CosineDecay(0.1, 10)(-1), r"the step must be a finite number >= 0, "
                                         r"received step=-1"),
    (lambda: S.deserialize({"class_name": "Nope"}), r"unknown learning-rate schedule"),
])
def test_bad_arguments_name_the_argument_and_value(make, message):
    with pytest.raises(ValueError, match=message):
        make()


ALL = [S.ExponentialDecay(0.1, 3, 0.5, staircase=True),
       S.PiecewiseConstantDecay([2, 4], [0.1, 0.05, 0.01]),
       S.InverseTimeDecay(0.1, 2, 1.0),
       S.CosineDecay(0.0, 4, alpha=0.1, warmup_target=0.1, warmup_steps=2)]


@pytest.mark.parametrize("sched", ALL, ids=lambda s: type(s).__name__)
def test_config_round_trip(sched):
    back = S.deserialize(S.serialize(sched))
    assert type(back) is type(sched) and back.get_config() == sched.get_config()
    assert [back(t) for t in range(12)] == [sched(t) for t in range(12)]


class _RecordingK:
    """A backend whose update ops only record the rate they are given."""

    def __init__(self):
        self.rates = []

    def sgd_update(self, p, g, v_, lr, momentum=0.0, nesterov=False):
        self.rates.append(lr)

    def rmsprop_update(self, p, g, ms, lr, rho=0.9, eps=1e-7):
        self.rates.append(lr)

    def adam_update(self, p, g, m, v_, t, lr, beta1=0.9, beta2=0.999, eps=1e-7):
        self.rates.append((t, lr))

    def zeros(self, shape):
        return np.zeros(shape, np.float32)


@pytest.mark.parametrize("cls", [O.SGD, O.RMSprop, O.Adam])
def test_optimizer_rates_step_t_with_schedule_at_t_minus_1(cls):
    sched = S.ExponentialDecay(0.1, 2, 0.5)
    opt = cls(learning_rate=sched)
    assert opt.learning_rate == 0.1 and opt.schedule is sched
    K = _RecordingK()
    p = np.zeros(3, np.float32)
    opt.build(K, [p])
    for _ in range(5):
        opt.apply(K, [p], [p])
    want = [sched(t) for t in range(5)]
    if cls is O.Adam:
        assert K.rates == list(zip(range(1, 6), want))    # Adam's t is 1-based, lr is not
    else:
        assert K.rates == want
    assert opt.learning_rate == sched(5)
    with pytest.raises(TypeError, match=r"created with a LearningRateSchedule .* not settable "
                                        r"\(received 0\.5\)"):
        opt.learning_rate = 0.5
    assert O.get(O.serialize(opt)).get_config() == opt.get_config()


@pytest.mark.parametrize("device", ["reference", "cpu"])
def test_sgd_with_a_schedule_updates_by_the_scheduled_rate(device):
    """Three real SGD steps on a backend: p_t = p_{t-1} - schedule(t - 1) * g (float64 ref)."""
    from fastconv import kernels
    K = kernels.get(device)
    sched = S.CosineDecay(0.0, 3, warmup_target=0.5, warmup_steps=1)
    opt = O.SGD(learning_rate=sched)
    rng = np.random.default_rng(0)
    p = rng.standard_normal(17).astype(np.float32)
    g = rng.standard_normal(17).astype(np.float32)
    opt.build(K, [p])
    want = p.astype(np.float64)
    for t in range(3):
        opt.apply(K, [p], [g])
        want = (want - ref_cosine(t, 0.0, 3, 0.0, 0.5, 1) * g).astype(np.float32)
        np.testing.assert_allclose(p, want, rtol=1e-6, atol=1e-7)


def test_a_saved_model_keeps_its_schedule_and_step(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 4)).astype(np.float32)
    y = (rng.random(8) > 0.5).astype(np.float32)
    model = fastconv.Sequential([L.Dense(3, activation="relu", input_shape=(4,)),
                                 L.Dense(1, activation="sigmoid")], device="reference", seed=0)
    sched = S.PiecewiseConstantDecay([1], [0.1, 0.01])
    model.compile(optimizer=O.Adam(learning_rate=sched), loss="binary_crossentropy")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    model.save(tmp_path / "m.npz")
    back = fastconv.load_model(tmp_path / "m.npz")
    assert back.optimizer.schedule.get_config() == sched.get_config()
    # the next fit resumes at step 2: both continue identically
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
    back.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
    assert back.optimizer.iterations == model.optimizer.iterations == 4
    for a, b in zip(model.get_weights(), back.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert math.isclose(back.optimizer.learning_rate, 0.01)
