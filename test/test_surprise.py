"""The surprise score against its closed form."""
import numpy as np
import torch

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
