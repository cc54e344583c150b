"""The surprise score against its closed form."""
import numpy as np
import pytest
import torch

from llmos_ros.models.fusions import fuse, names
from llmos_ros.surprise import loo_scores


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
