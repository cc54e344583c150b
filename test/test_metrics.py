"""Evaluation metrics against hand-computed values on tiny cases (no ROS, no model)."""
import math

import numpy as np
import pytest
import torch

from llmos_ros.evaluation.metrics import (
    DEFINITIONS,
    CoherenceClassifier,
    aligned_mse,
    error_and_skill,
    iwae_log_likelihood,
    latency_percentiles,
    linear_probe,
    mean_baseline_mse,
    mse,
    skill_score,
    subsets,
    throughput,
)


def test_subsets_all_nonempty_by_size_then_name_order():
    assert subsets(['image', 'audio', 'touch']) == [
        ('image',), ('audio',), ('touch',), ('image', 'audio'), ('image', 'touch'),
        ('audio', 'touch'), ('image', 'audio', 'touch')]
    assert subsets(['a']) == [('a',)]
    assert len(subsets('abcd')) == 15
    with pytest.raises(ValueError):
        subsets(['a', 'a'])


def test_mse_per_sample_on_2x3():
    pred = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    target = np.array([[1.0, 2.0, 5.0], [1.0, 1.0, 1.0]])
    np.testing.assert_allclose(mse(pred, target), [4.0 / 3.0, 1.0])
    # torch tensors (with grad) give the same, and extra axes are averaged per sample
    got = mse(torch.tensor(pred, requires_grad=True).reshape(2, 1, 3), torch.tensor(target)
              .reshape(2, 1, 3))
    np.testing.assert_allclose(got, [4.0 / 3.0, 1.0])
    with pytest.raises(ValueError, match='does not match'):
        mse(np.zeros((2, 4)), target)


def test_aligned_mse_is_the_least_mse_over_circular_time_shifts():
    rng = np.random.default_rng(0)
    pred = rng.normal(size=(4, 1, 3, 9))
    target = np.roll(pred, 3, -1) + 0.01 * rng.normal(size=pred.shape)
    direct = np.array([min(mse(np.roll(pred[i:i + 1], k, -1), target[i:i + 1])[0]
                           for k in range(9)) for i in range(4)])
    np.testing.assert_allclose(aligned_mse(pred, target), direct, rtol=1e-9, atol=1e-12)
    assert aligned_mse(pred, target).max() < 2e-4 < mse(pred, target).min()
    np.testing.assert_allclose(aligned_mse(pred, pred), 0.0, atol=1e-12)
    with pytest.raises(ValueError, match='does not match target'):
        aligned_mse(pred, target[..., :8])


def test_aligned_mse_in_space_is_the_least_mse_over_shifts_within_reach():
    rng = np.random.default_rng(1)
    pred = rng.normal(size=(3, 2, 8, 10))
    target = np.roll(pred, (2, -1), (-2, -1)) + 0.01 * rng.normal(size=pred.shape)
    direct = np.array([min(mse(np.roll(pred[i:i + 1], (dy, dx), (-2, -1)), target[i:i + 1])[0]
                           for dy in range(-2, 3) for dx in range(-2, 3)) for i in range(3)])
    np.testing.assert_allclose(aligned_mse(pred, target, (2, 2)), direct, rtol=1e-9, atol=1e-12)
    assert aligned_mse(pred, target, (2, 2)).max() < 2e-4
    # a shift beyond the reach is not searched
    assert aligned_mse(pred, target, (1, 1)).min() > 0.5


def test_baseline_and_skill_score():
    target = np.array([[1.0, 2.0, 5.0], [1.0, 1.0, 1.0]])
    # predicting the training mean 0 in normalised space: mean of squares per sample
    np.testing.assert_allclose(mean_baseline_mse(target, 0.0), [30.0 / 3.0, 1.0])
    np.testing.assert_allclose(mean_baseline_mse(target, np.array([1.0, 1.0, 1.0])),
                               [17.0 / 3.0, 0.0])
    assert skill_score(1.0, 4.0) == pytest.approx(0.75)
    assert skill_score(4.0, 4.0) == 0.0
    assert skill_score(8.0, 4.0) == pytest.approx(-1.0)
    assert math.isnan(skill_score(1.0, 0.0))


def test_error_and_skill_uses_only_present_samples():
    pred = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [9.0, 9.0, 9.0]])
    target = np.array([[1.0, 2.0, 5.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    got = error_and_skill(pred, target, train_mean=0.0, present=[True, True, False])
    err = (4.0 / 3.0 + 1.0) / 2
    base = (10.0 + 1.0) / 2
    assert got == pytest.approx({'mse': err, 'baseline_mse': base, 'skill': 1 - err / base})
    none = error_and_skill(pred, target, present=[False] * 3)
    assert all(math.isnan(v) for v in none.values())


def test_latency_percentiles_in_ms():
    got = latency_percentiles([0.040, 0.010, 0.030, 0.020])
    # sorted 10, 20, 30, 40 ms; rank q/100 * 3 with linear interpolation
    assert got == pytest.approx({'p50': 25.0, 'p90': 37.0, 'p99': 39.7, 'max': 40.0,
                                 'mean': 25.0})
    got = latency_percentiles([i / 1000 for i in range(1, 101)])
    assert got == pytest.approx({'p50': 50.5, 'p90': 90.1, 'p99': 99.01, 'max': 100.0,
                                 'mean': 50.5})
    assert all(math.isnan(v) for v in latency_percentiles([]).values())


def test_throughput_and_real_time_factor():
    assert throughput(100, 2.0, 10.0) == pytest.approx({'samples_per_s': 50.0,
                                                        'real_time_factor': 5.0})
    with pytest.raises(ValueError):
        throughput(1, 0.0, 1.0)


def test_iwae_log_mean_exp_matches_direct_computation():
    w = np.array([[1.0, 2.0], [3.0, 6.0]])  # K=2, B=2: mean weights 2 and 4
    expected = np.log(w.mean(axis=0))
    got_t = iwae_log_likelihood(torch.tensor(np.log(w)))
    assert isinstance(got_t, torch.Tensor) and got_t.shape == (2,)
    np.testing.assert_allclose(got_t.numpy(), expected)
    np.testing.assert_allclose(iwae_log_likelihood(np.log(w)), expected)
    # stable where exp underflows: log-weights around -1000
    big = np.full((3, 1), -1000.0)
    np.testing.assert_allclose(iwae_log_likelihood(big), [-1000.0])
    np.testing.assert_allclose(iwae_log_likelihood(torch.tensor(big)).numpy(), [-1000.0])
    with pytest.raises(ValueError):
        iwae_log_likelihood(np.zeros(3))


def _blobs(n, rng, dim=6, classes=3):
    y = rng.integers(0, classes, n)
    x = rng.normal(0, 0.3, (n, dim))
    x[np.arange(n), y] += 4.0  # class c: dimension c far out -> linearly separable
    return x, y


def test_linear_probe_separable_is_perfect_and_shuffled_is_chance():
    rng = np.random.default_rng(0)
    xtr, ytr = _blobs(150, rng)
    xte, yte = _blobs(90, rng)
    assert linear_probe(xtr, ytr, xte, yte) == 1.0
    assert linear_probe(torch.tensor(xtr), ytr, torch.tensor(xte), yte, seed=3) == 1.0
    # labels unrelated to the latents: about chance (1/4)
    xtr, xte = rng.normal(size=(300, 8)), rng.normal(size=(300, 8))
    acc = linear_probe(xtr, rng.permutation(np.arange(300) % 4),
                       xte, rng.permutation(np.arange(300) % 4))
    assert 0.12 < acc < 0.40
    # a single training class: the probe predicts it
    assert linear_probe(xtr, [1] * 300, xte[:5], [1, 1, 2, 1, 1]) == 0.8


def _toy_images(n, rng, noise=0.3):
    """Three classes of 1x8x8 images: bright top half, bottom half or left half."""
    y = rng.integers(0, 3, n)
    x = rng.normal(0, noise, (n, 1, 8, 8)).astype(np.float32)
    x[y == 0, :, :4, :] += 1.0
    x[y == 1, :, 4:, :] += 1.0
    x[y == 2, :, :, :4] += 1.0
    return x, np.array([3, 7, 9])[y]  # labels need not be 0..n-1


@pytest.mark.parametrize('method', ['cnn', 'logistic'])
def test_coherence_classifier_learns_and_is_deterministic(method):
    rng = np.random.default_rng(1)
    x, y = _toy_images(120, rng)
    xt, yt = _toy_images(60, rng)
    state = torch.random.get_rng_state()
    clf = CoherenceClassifier(method=method, epochs=15, batch_size=32, seed=0).fit(x, y)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
    assert clf.accuracy(xt, yt) >= 0.95
    assert set(clf.predict(xt)) <= {3, 7, 9}
    # coherence of "generated" samples: a blurred copy still classifies
    assert clf.accuracy(torch.tensor(0.5 * xt), yt) >= 0.9
    again = CoherenceClassifier(method=method, epochs=15, batch_size=32, seed=0).fit(x, y)
    noise = rng.normal(size=(40, 1, 8, 8))
    np.testing.assert_array_equal(clf.predict(noise), again.predict(noise))
    with pytest.raises(ValueError, match='shape'):
        clf.predict(np.zeros((2, 1, 4, 4)))


def test_coherence_classifier_predicts_in_passes_as_in_one():
    """Passes of PREDICT_ROWS rows: the labels of one pass over every row."""
    from llmos_ros.evaluation.metrics import PREDICT_ROWS
    rng = np.random.default_rng(3)
    x, y = _toy_images(120, rng)
    clf = CoherenceClassifier(epochs=2, batch_size=32, seed=0).fit(x, y)
    xt, _ = _toy_images(3 * PREDICT_ROWS + 7, rng)
    with torch.no_grad():
        logits = clf._model(torch.from_numpy(xt))
    np.testing.assert_array_equal(clf.predict(xt), clf.classes_[logits.argmax(1).numpy()])


def test_coherence_classifier_on_flat_inputs_uses_mlp():
    rng = np.random.default_rng(2)
    x, y = _blobs(90, rng)
    clf = CoherenceClassifier(epochs=30, batch_size=32).fit(x.astype(np.float32), y)
    assert clf.accuracy(*_blobs(60, rng)) >= 0.95


def test_every_reported_metric_has_a_definition():
    for key in ('mse', 'baseline_mse', 'skill', 'recon', 'cross', 'neg_elbo', 'iwae_nll',
                'probe_accuracy', 'coherence', 'samples_per_s', 'real_time_factor',
                'latency_ms', 'drops', 'counts'):
        assert len(DEFINITIONS[key]) > 20
