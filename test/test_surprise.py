"""The surprise score against closed forms, with and without clean-data statistics."""
import numpy as np
import pytest
import torch

from llmos_ros.surprise import SurpriseCalibration, clean_statistics, loo_deltas, loo_scores

NAMES = ['a', 'b']


def two_experts():
    """Two experts over D=3 shared dimensions, batch 2; the second sample lacks 'b'."""
    mus = torch.tensor([[[1.0, 0.0, 2.0], [0.5, 0.5, 0.5]],
                        [[0.0, 1.0, -1.0], [9.0, 9.0, 9.0]]])
    logvars = torch.log(torch.tensor([[[1.0, 2.0, 0.5], [1.0, 1.0, 1.0]],
                                      [[3.0, 1.0, 0.5], [1.0, 1.0, 1.0]]]))
    mask = torch.tensor([[True, True], [True, False]])
    return mus, logvars, mask


def test_the_disagreement_with_one_other_expert_is_the_difference_of_means():
    mus, logvars, mask = two_experts()
    delta, std = loo_deltas('moe', mus, logvars, mask)  # a mixture of one expert is that expert
    np.testing.assert_allclose(delta[0, 0], [1.0, -1.0, 3.0])
    np.testing.assert_allclose(delta[1, 0], [-1.0, 1.0, -3.0])
    np.testing.assert_allclose(std[0, 0], np.sqrt([4.0, 3.0, 1.0]))
    assert torch.isnan(delta[:, 1]).all()  # 'b' absent: neither has another to be judged by


def test_uncalibrated_scores_use_the_experts_variances():
    scores = loo_scores('moe', *two_experts())
    np.testing.assert_allclose(scores[0, 0], np.mean([1 / 4, 1 / 3, 9 / 1]))
    assert np.isnan(scores[:, 1]).all()


def test_calibrated_scores_standardise_by_the_clean_disagreement():
    center, scale = np.array([1.0, 0.0, 1.0]), np.array([2.0, 1.0, 4.0])
    cal = SurpriseCalibration('m', {}, {}, {'a': (center, scale)})
    scores = loo_scores('moe', *two_experts(), cal, NAMES)
    np.testing.assert_allclose(scores[0, 0], np.mean([0.0, 1.0, 0.25]))
    np.testing.assert_allclose(scores[1, 0], np.mean([1 / 4, 1 / 3, 9 / 1]))  # 'b': no stats
    again = SurpriseCalibration.from_dict(cal.to_dict())
    np.testing.assert_array_equal(again.standardiser('a')[1], scale)
    old = {'model_id': 'm', 'counts': {'a': 3}, 'scores': {'a': [0.1, 0.2, 0.3]}}
    assert SurpriseCalibration.from_dict(old).standardiser('a') is None  # old meaning kept


def test_clean_statistics_skip_undefined_rows_and_floor_a_constant_dimension():
    rng = np.random.default_rng(0)
    delta = rng.normal([1.0, -2.0, 0.0], [0.5, 2.0, 0.0], size=(4000, 3))
    delta[::10] = np.nan
    center, scale = clean_statistics(delta)
    np.testing.assert_allclose(center[:2], [1.0, -2.0], atol=0.1)
    np.testing.assert_allclose(scale[:2], [0.5, 2.0], rtol=0.05)
    assert scale[2] == pytest.approx(1e-3 * np.median(delta[~np.isnan(delta[:, 0])].std(0)))
    assert clean_statistics(np.full((5, 3), np.nan)) is None
