"""The surprise score against its closed form."""
import json

import numpy as np
import pytest
import torch

from llmos_ros.errors import CheckpointError
from llmos_ros.models.fusions import fuse, names
from llmos_ros.surprise import (
    NU_GRID,
    ScoreWindow,
    SurpriseCalibration,
    clean_and_shuffled,
    context_key,
    context_warning,
    fit_student,
    fit_weights,
    held_out_alarms,
    held_out_line,
    loo_distances,
    loo_scores,
    scored_subsets,
    student_score,
    student_terms,
    windowed,
)


def test_scores_are_the_mean_squared_distance_standardised_by_both_variances():
    """Two experts over D=3 shared dimensions, batch 2; the second sample lacks 'b'."""
    mus = torch.tensor([[[1.0, 0.0, 2.0], [0.5, 0.5, 0.5]],
                        [[0.0, 1.0, -1.0], [9.0, 9.0, 9.0]]])
    logvars = torch.log(torch.tensor([[[1.0, 2.0, 0.5], [1.0, 1.0, 1.0]],
                                      [[3.0, 1.0, 0.5], [1.0, 1.0, 1.0]]]))
    mask = torch.tensor([[True, True], [True, False]])
    scores = loo_scores('moe', mus, logvars, mask).numpy()  # a mixture of one expert is itself
    want = np.mean([1 / 4, 1 / 3, 9 / 1])  # (1, -1, 3)^2 / (1 + 3, 2 + 1, 0.5 + 0.5)
    np.testing.assert_allclose(scores[:, 0], [want, want])
    assert np.isnan(scores[:, 1]).all()  # 'b' absent: neither has another to be judged by


def _loo_one_at_a_time(fusion, mus, logvars, mask):
    """The scores with one fusion call per left-out expert (the definition, unbatched)."""
    out = np.full(tuple(mask.shape), np.nan)
    for m in range(mus.shape[0]):
        others = mask.clone()
        others[m] = False
        mu_o, lv_o = fuse(fusion, mus, logvars, others).gaussian()
        d2 = ((mus[m] - mu_o) ** 2 / (torch.exp(logvars[m]) + torch.exp(lv_o))).double()
        valid = (mask[m] & others.any(0)).numpy()
        out[m, valid] = d2.mean(-1).numpy()[valid]
    return out


@pytest.mark.parametrize('fusion', names())
def test_the_batched_leave_one_out_fusions_equal_one_fusion_per_expert(fusion):
    gen = torch.Generator().manual_seed(3)
    mus = torch.randn(3, 6, 5, generator=gen)
    logvars = torch.randn(3, 6, 5, generator=gen)
    mask = torch.tensor([[1, 1, 0, 1, 0, 0], [1, 0, 1, 1, 0, 1], [1, 1, 1, 0, 0, 0]], dtype=bool)
    got = loo_scores(fusion, mus, logvars, mask).numpy()
    want = _loo_one_at_a_time(fusion, mus, logvars, mask)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isfinite(got).sum() == 9  # samples 0 (three), 1, 2 and 3 (two each); 4, 5 none
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_the_student_score_is_the_mean_negative_log_density_relative_to_agreement():
    d2 = np.array([[0.0, 3.0], [8.0, 1.0]])
    nu, scale = np.array([1.0, 4.0]), np.array([2.0, 0.5])
    want = [np.mean([0.0, 2.5 * np.log(1 + 3.0 / 2.0)]),
            np.mean([np.log(1 + 8.0 / 2.0), 2.5 * np.log(1 + 1.0 / 2.0)])]
    np.testing.assert_allclose(student_score(d2, nu, scale), want)


def test_fit_student_recovers_the_degrees_of_freedom_and_scale_of_t_distances():
    gen = np.random.default_rng(0)
    nu, scale = np.array([1.0, 4.0, 64.0]), np.array([0.3, 5.0, 2.0])
    z = gen.standard_t(nu, size=(20_000, 3)) * np.sqrt(scale)
    got_nu, got_scale = fit_student(z ** 2)
    assert list(got_nu[:2]) == [1.0, 4.0] and got_nu[2] >= 16.0  # near-Gaussian: a large nu
    assert set(got_nu) <= set(NU_GRID)
    np.testing.assert_allclose(got_scale, scale, rtol=0.06)


def test_a_calibration_without_laws_scores_with_the_plain_mean_its_first_meaning():
    d2 = np.array([[1.0, 3.0, 8.0]])
    old = SurpriseCalibration.from_dict({'model_id': 'm', 'counts': {'a': 3},
                                         'scores': {'a': [0.5, 1.0, 2.0]}})
    assert old.laws == {} and old.score('a', d2)[0] == 4.0
    law = (np.array([1.0, 2.0, 4.0]), np.array([1.0, 1.0, 2.0]))
    new = SurpriseCalibration('m', old.scores, old.counts, {'a': law})
    again = SurpriseCalibration.from_dict(json.loads(json.dumps(new.to_dict())))
    np.testing.assert_array_equal(again.laws['a'][0], law[0])
    np.testing.assert_allclose(again.score('a', d2), student_score(d2, *law))
    with pytest.raises(CheckpointError, match='a has 3 fitted dimensions, the model 2 shared'):
        new.score('a', d2[:, :2])


def test_weights_go_to_the_dimensions_that_tell_shuffled_from_clean():
    """Shuffling moves dimension 1 only: it gets the weight; the score is the weighted mean."""
    gen = np.random.default_rng(1)
    clean = gen.chisquare(1, size=(3000, 4))
    shuffled = gen.chisquare(1, size=(3000, 4))
    shuffled[:, 1] *= 9.0
    law = (np.full(4, 8.0), np.ones(4))
    w = fit_weights(student_terms(clean, *law), student_terms(shuffled, *law))
    assert w.shape == (4,) and np.all(w >= 0) and abs(w.sum() - 1.0) < 1e-6
    assert w[1] > 0.7 and w.argmax() == 1
    np.testing.assert_allclose(student_score(clean[:5], *law, w),
                               student_terms(clean[:5], *law) @ w)
    np.testing.assert_allclose(student_score(clean[:5], *law, np.full(4, 0.25)),
                               student_score(clean[:5], *law))


def test_shuffled_distances_pair_each_expert_with_another_samples_others():
    gen = torch.Generator().manual_seed(2)
    mus, logvars = torch.randn(3, 9, 4, generator=gen), torch.randn(3, 9, 4, generator=gen)
    mask = torch.ones(3, 9, dtype=bool)
    mask[2, 5] = False
    clean, shuffled = clean_and_shuffled('mopoe', mus, logvars, mask)
    np.testing.assert_allclose(clean, loo_distances('mopoe', mus, logvars, mask).numpy(),
                               rtol=1e-6)
    # row 0's partner is 0 + 9/3 = 3: expert m of sample 3 against the others of sample 0
    moved = mus.clone(), logvars.clone()
    for t in moved:
        t[0, 0] = t[0, 3]
    np.testing.assert_allclose(shuffled[0, 0], loo_distances('mopoe', *moved, mask)[0, 0],
                               rtol=1e-6)
    # partners b + (3, 4, 6)[b % 3] (cyclic): 3 5 8 6 8 2 0 2 5; modality 2 absent from sample 5
    assert list(np.flatnonzero(np.isnan(shuffled[2]).all(-1))) == [1, 8]
    assert list(np.flatnonzero(np.isnan(clean[2]).all(-1))) == [5]


def test_stored_weights_round_trip_and_a_calibration_without_them_keeps_the_plain_mean():
    law = (np.array([1.0, 2.0]), np.array([1.0, 3.0]))
    w = np.array([0.75, 0.25])
    cal = SurpriseCalibration('m', {'a': np.array([1.0])}, {'a': 1}, {'a': law}, {'a': w})
    again = SurpriseCalibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    np.testing.assert_array_equal(again.weights['a'], w)
    d2 = np.array([[2.0, 6.0]])
    np.testing.assert_allclose(again.score('a', d2), student_terms(d2, *law) @ w)
    data = cal.to_dict()
    del data['laws']['a']['weight']
    older = SurpriseCalibration.from_dict(data)
    assert older.weights == {}
    np.testing.assert_allclose(older.score('a', d2), student_score(d2, *law))


@pytest.mark.parametrize('law, match', [
    ({'nu': [1.0, 2.0], 'scale': [1.0]}, 'not two equal-length positive lists'),
    ({'nu': [1.0, -2.0], 'scale': [1.0, 1.0]}, 'not two equal-length positive lists'),
    ({'nu': [1.0]}, 'not a surprise calibration'),
    ({'nu': [1.0, 2.0], 'scale': [1.0, 1.0], 'weight': [1.0]},
     'weight of a is not 2 non-negative numbers summing to 1'),
    ({'nu': [1.0, 2.0], 'scale': [1.0, 1.0], 'weight': [1.5, -0.5]},
     'weight of a is not 2 non-negative numbers summing to 1'),
])
def test_a_stored_law_that_cannot_be_used_is_refused(law, match):
    data = {'model_id': 'm', 'counts': {'a': 1}, 'scores': {'a': [1.0]}, 'laws': {'a': law}}
    with pytest.raises(CheckpointError, match=match):
        SurpriseCalibration.from_dict(data, 'side.json')


def test_the_plain_score_is_the_mean_of_the_distances():
    gen = torch.Generator().manual_seed(5)
    mus, logvars = torch.randn(3, 4, 6, generator=gen), torch.randn(3, 4, 6, generator=gen)
    mask = torch.tensor([[1, 1, 0, 1], [1, 0, 1, 1], [1, 1, 1, 0]], dtype=bool)
    d2 = loo_distances('mopoe', mus, logvars, mask)
    assert d2.shape == (3, 4, 6) and d2.dtype == torch.float64
    np.testing.assert_array_equal(loo_scores('mopoe', mus, logvars, mask).numpy(),
                                  d2.mean(-1).numpy())


def test_the_windowed_score_is_the_mean_of_the_finite_scores_in_the_last_window_of_its_run():
    rng = np.random.default_rng(3)
    stamps = np.cumsum(rng.integers(10, 60, 40)) * 1_000_000  # 10-60 ms apart
    scores = rng.normal(size=40)
    scores[[4, 5, 17]] = np.nan  # the modality was not scored there
    runs = [np.arange(0, 25), np.arange(25, 40)]  # a reset between rows 24 and 25
    got = windowed(stamps, scores, 0.2, runs)
    for k in range(40):
        run = runs[0] if k < 25 else runs[1]
        inside = [j for j in run if stamps[k] - 200_000_000 < stamps[j] <= stamps[k]
                  and np.isfinite(scores[j])]
        want = np.mean(scores[inside]) if np.isfinite(scores[k]) else np.nan
        np.testing.assert_allclose(got[k], want, err_msg=str(k))
    np.testing.assert_array_equal(windowed(stamps, scores, 0.0, runs), scores)  # per frame
    # live, one sample at a time: the same means (a reset clears the window)
    live = ScoreWindow(0.2)
    for k in range(40):
        if k == 25:
            live.clear()
        if np.isfinite(scores[k]):
            assert live.add('a', int(stamps[k]), float(scores[k])) == pytest.approx(got[k])
    assert ScoreWindow(0.0).add('a', 5, 1.5) == 1.5


def test_the_calibration_keeps_its_window_and_an_older_one_scores_per_frame():
    cal = SurpriseCalibration('m', {'a': np.array([1.0])}, {'a': 1}, window_s=0.3)
    assert SurpriseCalibration.from_dict(json.loads(json.dumps(cal.to_dict()))).window_s == 0.3
    data = cal.to_dict()
    del data['window_s']
    assert SurpriseCalibration.from_dict(data).window_s == 0.0
    with pytest.raises(CheckpointError, match='window_s must be a finite number >= 0, got -1'):
        SurpriseCalibration.from_dict({**data, 'window_s': -1}, 'side.json')


def test_a_context_is_the_modality_and_the_set_of_others_it_is_scored_against():
    names = ['camera', 'audio', 'tactile']
    assert context_key('audio', ['tactile', 'camera'], names) == 'audio'  # all the others
    assert context_key('audio', ['audio', 'tactile'], names) == 'audio|tactile'
    assert context_key('tactile', ['audio', 'camera'], names) == 'tactile'
    assert context_key('tactile', ['audio'], names) == 'tactile|audio'
    assert scored_subsets(names) == [('camera', 'audio'), ('camera', 'tactile'),
                                     ('audio', 'tactile'), ('camera', 'audio', 'tactile')]
    # a calibration per context keys by it; one stored before contexts has one entry for all
    cal = SurpriseCalibration('m', {'audio|tactile': np.array([1.0, 2.0])}, {'audio|tactile': 2},
                              contexts=True)
    again = SurpriseCalibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert again.contexts and again.key('audio', ['tactile'], names) == 'audio|tactile'
    assert again.tail('audio|tactile', 1.5) == pytest.approx(2 / 3)
    assert np.isnan(again.tail('audio', 1.5))  # no samples of the full set: cannot be told
    old = cal.to_dict()
    del old['contexts']
    assert SurpriseCalibration.from_dict(old).key('audio', ['tactile'], names) == 'audio'
    with pytest.raises(CheckpointError, match="contexts must be true or false, got 'yes'"):
        SurpriseCalibration.from_dict({**old, 'contexts': 'yes'}, 'side.json')
    # the node and llmos-eval warn about an old one where a silent sensor makes a difference
    assert context_warning(cal, names) == '' and context_warning(None, names) == ''
    assert 'predates contexts' in context_warning(SurpriseCalibration.from_dict(old), names)
    assert context_warning(SurpriseCalibration.from_dict(old), names[:2]) == ''


def test_the_live_window_starts_over_when_the_context_changes():
    live = ScoreWindow(1.0)
    assert live.add('a', 1, 2.0, 'a') == 2.0
    assert live.add('a', 2, 4.0, 'a') == 3.0
    assert live.add('a', 3, 10.0, 'a|b') == 10.0  # scored against other experts now
    assert live.add('a', 4, 0.0, 'a|b') == 5.0
    assert live.add('b', 5, 1.0) == 1.0  # each modality its own


def test_held_out_alarms_are_near_the_alarm_rate_on_exchangeable_scores():
    scores = np.random.default_rng(0).standard_normal(5000)
    rates = held_out_alarms(scores)
    assert len(rates) == 5 and all(r <= 0.025 for r in rates) and np.mean(rates) > 0.004
    assert held_out_alarms(np.r_[np.nan, scores, np.nan]) == rates  # NaN: unscored


def test_held_out_alarms_show_a_part_unlike_the_others():
    scores = np.random.default_rng(1).standard_normal(1000)
    scores[:200] += 3.0  # the first fifth's episodes are harder than the rest
    rates = held_out_alarms(scores)
    assert rates[0] > 0.3 and max(rates[1:]) <= 0.02
    assert held_out_alarms(scores[:120]) == []  # the other parts hold < 100: no alarm possible


def test_held_out_alarms_round_trip_are_shown_and_an_older_calibration_has_none():
    cal = SurpriseCalibration('m', {'camera': np.array([1.0])}, {'camera': 627},
                              held_out={'camera': [0.071, 0.0, 0.0, 0.016, 0.0]})
    again = SurpriseCalibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert again.held_out == cal.held_out
    assert 'camera 7.1 / 0.0 / 0.0 / 1.6 / 0.0 %' in held_out_line(again, ['camera', 'tactile'])
    old = cal.to_dict()
    del old['held_out']
    assert SurpriseCalibration.from_dict(old).held_out == {}
    assert '(125 or more wanted)' in held_out_line(SurpriseCalibration.from_dict(old),
                                                    ['camera'])
    with pytest.raises(CheckpointError, match=r'held_out alarms of camera must be shares in'):
        SurpriseCalibration.from_dict({**old, 'held_out': {'camera': [1.5]}}, 'side.json')
