"""The coherence classifier cache: keys follow the fit's inputs, classifiers round-trip."""
import numpy as np

from llmos_ros.evaluation.classifier_cache import ClassifierCache, fit_key
from llmos_ros.evaluation.metrics import CoherenceClassifier


def _data(seed=0, n=40):
    rng = np.random.default_rng(seed)
    y = np.array(['a', 'b'] * (n // 2))
    x = rng.standard_normal((n, 1, 6, 6)).astype(np.float32)
    x[y == 'b', :, :3] += 2.0  # learnable
    return x, y


def test_the_key_changes_with_any_input_value_label_or_setting():
    x, y = _data()
    settings = CoherenceClassifier(epochs=2).settings()
    key = fit_key(x, y, settings)
    assert fit_key(x.copy(), y.copy(), dict(settings)) == key
    x2 = x.copy()
    x2[7, 0, 1, 2] = np.nextafter(x2[7, 0, 1, 2], np.inf)  # one value, one ulp
    y2 = y.copy()
    y2[3] = 'c'
    changed = [fit_key(x2, y, settings), fit_key(x, y2, settings),
               fit_key(x, y, {**settings, 'seed': 1}), fit_key(x, y, {**settings, 'epochs': 3}),
               fit_key(x.reshape(40, 6, 6, 1), y, settings)]  # same bytes, another shape
    assert len({key, *changed}) == 6


def test_a_cached_classifier_predicts_as_the_fitted_one(tmp_path):
    x, y = _data()
    clf = CoherenceClassifier(epochs=2).fit(x, y)
    cache = ClassifierCache(tmp_path)
    key = fit_key(x, y, clf.settings())
    assert cache.load(key) is None
    assert cache.save(key, clf)
    back = cache.load(key)
    test_x, _ = _data(seed=1)
    np.testing.assert_array_equal(back.predict(test_x), clf.predict(test_x))
    assert back.settings() == clf.settings() and list(back.classes_) == ['a', 'b']
    cache.path(key).write_bytes(b'not a torch file')  # damaged: ignored, never an error
    assert cache.load(key) is None


def test_an_unwritable_cache_folder_is_not_an_error(tmp_path):
    x, y = _data()
    clf = CoherenceClassifier(epochs=1).fit(x, y)
    (tmp_path / 'coherence').write_text('a file where the folder should be')
    assert not ClassifierCache(tmp_path).save('k', clf)
