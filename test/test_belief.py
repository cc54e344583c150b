"""Belief filter against a closed-form Kalman step; reset rules; the staleness rule."""
import numpy as np
import pytest
import torch

from llmos_ros.belief import (
    FALLBACK_PROCESS_NOISE,
    NS,
    BeliefConfig,
    BeliefFilter,
    chi2_quantile,
    staleness_weight,
)
from llmos_ros.belief_noise import BeliefNoise
from llmos_ros.errors import ConfigError, InputError
from llmos_ros.models.fusion import poe


def test_first_update_is_the_models_poe_with_the_prior_expert():
    mus = np.array([[0.3, -1.0], [0.5, 2.0]])
    var = np.array([[0.1, 0.5], [0.4, 2.0]])
    state = BeliefFilter().update(0, mus, 1 / var)
    assert state.reset == 'first'
    mu, logvar = poe(torch.tensor(mus)[:, None], torch.log(torch.tensor(var))[:, None],
                     torch.ones(2, 1, dtype=torch.bool))
    np.testing.assert_allclose(state.mean, mu[0].numpy(), rtol=1e-9)
    np.testing.assert_allclose(state.var, torch.exp(logvar[0]).numpy(), rtol=1e-9)


def test_a_restart_takes_the_models_own_posterior_mean_with_the_scaled_variance():
    # expert scale 100: the filter trusts the expert's variance 100x less while tracking, but a
    # restart must not shrink the mean towards the prior's 0 by that much (the belief would
    # start far off the per-frame latent after every jump)
    noise = BeliefNoise('m', np.array([0.1, 0.1]), np.zeros(2), np.array([100.0, 100.0]))
    filt = BeliefFilter(BeliefConfig(), noise)
    state = filt.update(0, [2.0, -1.0], [100.0, 100.0], model_id='m')
    assert state.reset == 'first'
    np.testing.assert_allclose(state.mean, [2.0 * 100 / 101, -1.0 * 100 / 101])  # prior x expert
    np.testing.assert_allclose(state.var, [0.5, 0.5])  # prior x the scaled expert (var 1)
    again = filt.update(NS // 10, [2.0, -1.0], [100.0, 100.0], model_id='other')
    assert again.reset == 'model'
    np.testing.assert_allclose(again.mean, state.mean)


@pytest.mark.parametrize('scale', [np.ones(3), np.array([4.0, 0.5, 20.0])])
def test_update_is_a_kalman_step_per_dimension_with_the_prior_expert_counted_once(scale):
    q, dt = np.array([0.2, 0.05, 0.5]), 0.1
    noise = BeliefNoise('m', q, np.zeros(3), scale)  # learned: q and the expert scale per dim
    filt = BeliefFilter(BeliefConfig(), noise)
    assert filt.noise_source == 'learned'
    v_first = np.array([0.1, 0.5, 0.05])
    first = filt.update(0, [0.3, -1.0, 2.0], 1 / v_first, model_id='m')
    np.testing.assert_allclose(first.var, 1 / (1 + 1 / (scale * v_first)), rtol=1e-9)
    m0, v0 = first.mean.copy(), first.var.copy()
    z, r = np.array([0.8, -0.2, 1.5]), np.array([0.2, 0.3, 0.1])
    state = filt.update(int(dt * NS), z, 1 / r, model_id='m')
    # closed form, measurement variance s r: predict v' = v + q dt, gain K = v' / (v' + s r),
    # x = m + K (z - m), v = (1 - K) v'
    vp = v0 + q * dt
    gain = vp / (vp + scale * r)
    assert state.reset == ''
    np.testing.assert_allclose(state.mean, m0 + gain * (z - m0), rtol=1e-9)
    np.testing.assert_allclose(state.var, (1 - gain) * vp, rtol=1e-9)


@pytest.mark.parametrize('power', [0.0, 0.5, 1.0])
def test_the_variance_power_tempers_the_experts_variance_and_keeps_the_staleness_share(power):
    """Measurement variance s v_ref (v / v_ref)^g (belief_noise doc, Variance power), / w."""
    q, scale, ref = np.array([0.2, 0.05]), np.array([4.0, 0.5]), np.array([0.3, 2.0])
    noise = BeliefNoise('m', q, np.zeros(2), scale, variance_power=power, expert_var=ref)
    filt = BeliefFilter(BeliefConfig(jump_p=0.0), noise)
    first = filt.update(0, [0.3, -1.0], [1 / 0.1, 1 / 0.5], model_id='m')
    v, w = np.array([0.03, 8.0]), np.array([1.0, 0.4])  # the model's variances; a late expert
    bar_var = first.var + q * 0.1
    state = filt.update(NS // 10, [0.8, 0.5], w / v, model_id='m', weights=w)
    r = scale * ref * (v / ref) ** power / w
    gain = bar_var / (bar_var + r)
    np.testing.assert_allclose(state.mean, first.mean + gain * ([0.8, 0.5] - first.mean),
                               rtol=1e-9)
    np.testing.assert_allclose(state.var, (1 - gain) * bar_var, rtol=1e-9)
    assert filt.calibrated(np.array([0.0, 5.0]))[0] == 0.0  # no opinion stays none
    with pytest.raises(InputError, match='weight outside'):
        filt.update(NS // 5, [0.8, 0.5], w / v, model_id='m', weights=[1.0, 0.0])


def test_a_noise_model_that_knows_the_state_reverts_to_its_mean_and_variance():
    """Ornstein-Uhlenbeck predict (belief doc, Transition) against its closed form."""
    q, m, big = np.array([0.2, 0.5, 0.4]), np.array([1.0, -0.5, 0.0]), np.array([0.5, 2.0, 0.1])
    noise = BeliefNoise('m', q, np.zeros(3), np.ones(3), state_mean=m, state_var=big)
    filt = BeliefFilter(BeliefConfig(), noise)
    assert filt.reverts
    first = filt.update(0, [3.0, 1.0, 0.0], [4.0, 4.0, 0.0], model_id='m')  # dim 2: no expert
    assert first.reset == 'first'
    np.testing.assert_allclose(first.var, [1 / 5, 1 / 5, 1.0])  # knowing nothing: max(1, S)
    theta = q / (2 * big)
    stds = []
    for dt in (0.1, 0.5, 2.0, 10.0, 60.0):
        mean, var = filt.propagated(int(dt * NS))
        a = np.exp(-theta * dt)
        np.testing.assert_allclose(mean, m + a * (first.mean - m), rtol=1e-9)
        np.testing.assert_allclose(var, np.maximum(first.var, a * a * first.var
                                                   + big * (1 - a * a)), rtol=1e-9)
        stds.append(np.sqrt(var))
    assert all(np.all(b >= a) for a, b in zip(stds, stds[1:]))  # never surer while predicting
    np.testing.assert_allclose(stds[-1][:2], np.sqrt(big[:2]), rtol=1e-3)  # levels off at S
    assert stds[-1][2] == 1.0  # above S (a restart's 1): kept, not lowered
    np.testing.assert_allclose(filt.propagated(int(60 * NS))[0], m, atol=1e-3)
    # short gaps: the random walk's growth q dt while the variance is far below S
    slow = BeliefFilter(BeliefConfig(), BeliefNoise('m', q, np.zeros(3), np.ones(3),
                                                   state_mean=m, state_var=np.full(3, 1e4)))
    slow.update(0, [3.0, 1.0, 0.0], [100.0, 100.0, 100.0], model_id='m')
    np.testing.assert_allclose(slow.propagated(NS // 100)[1], slow.state.var + q * 0.01,
                               rtol=1e-4)
    # a noise model stored before the state was learned: the plain walk, capped at 1
    plain = BeliefFilter(BeliefConfig(), BeliefNoise('m', q, np.zeros(3), np.ones(3)))
    assert not plain.reverts
    plain.update(0, [3.0, 1.0, 0.0], [4.0, 4.0, 0.0], model_id='m')
    np.testing.assert_allclose(plain.propagated(NS)[0], plain.state.mean)
    np.testing.assert_allclose(plain.propagated(NS)[1], np.minimum(plain.state.var + q, 1.0))


def test_process_noise_learned_set_or_fallback():
    noise = BeliefNoise('m', np.array([0.3, 2.0]), np.ones(2), np.array([5.0, 5.0]))
    old = BeliefFilter(BeliefConfig())  # a checkpoint without a learned noise model
    assert old.noise_source == 'fallback' and old.process_noise == FALLBACK_PROCESS_NOISE == 0.05
    assert old.expert_scale == 1.0
    learned = BeliefFilter(BeliefConfig(process_noise=-1.0), noise)
    assert learned.noise_source == 'learned'
    np.testing.assert_array_equal(learned.process_noise, [0.3, 2.0])
    overridden = BeliefFilter(BeliefConfig(process_noise=0.2), noise)  # >= 0: that q, unscaled
    assert overridden.noise_source == 'set' and overridden.process_noise == 0.2
    assert overridden.expert_scale == 1.0
    learned.update(0, [0.0, 0.0], [1.0, 1.0])
    with pytest.raises(InputError, match='3 latent dimensions, the noise model of m has 2'):
        learned.update(NS // 10, [0.0] * 3, [1.0] * 3)


def test_dimension_without_evidence_only_propagates_and_its_std_grows_to_the_prior():
    filt = BeliefFilter(BeliefConfig(process_noise=0.5))
    filt.update(0, [1.0, 1.0], [100.0, 100.0])
    stds = []
    for k in range(1, 12):  # no expert informs dimension 1: a silent modality's private latent
        state = filt.update(k * NS // 5, [1.0, 0.0], [100.0, 0.0])
        stds.append(state.std[1])
        assert state.mean[1] == pytest.approx(100 / 101)  # no pull towards the prior's mean
    assert all(b > a for a, b in zip(stds, stds[1:5]))
    assert stds[-1] == pytest.approx(1.0)  # capped at the prior
    assert state.std[0] < 0.1


@pytest.mark.parametrize('stamp, model_id, size, reason', [
    (3 * NS, 'm', 2, 'gap'), (NS // 10 - 1, 'm', 2, 'stamp_backwards'),
    (NS // 10, 'm', 2, 'stamp_backwards'), (NS // 5, 'other', 2, 'model'),
    (NS // 5, 'm', 3, 'model'), (NS // 5, 'm', 2, '')])
def test_reset_rules(stamp, model_id, size, reason):
    filt = BeliefFilter(BeliefConfig(reset_gap_s=2.0))
    filt.update(NS // 10, [0.5, 0.5], [4.0, 4.0], model_id='m')
    state = filt.update(stamp, [-0.5] * size, [4.0] * size, model_id=model_id)
    assert state.reset == reason
    if reason:  # a reset starts again from the prior: prior x expert
        np.testing.assert_allclose(state.mean, [-0.4] * size)
        np.testing.assert_allclose(state.var, [0.2] * size)
    else:
        assert np.all(state.var < 0.2)


@pytest.mark.parametrize('dof, exact', [(1, 10.828), (3, 16.266), (8, 26.124), (40, 73.402)])
def test_chi2_quantile_is_close_to_the_exact_one(dof, exact):
    assert chi2_quantile(dof, 1e-3) == pytest.approx(exact, rel=0.035 if dof == 1 else 0.02)


def test_an_innovation_beyond_the_chi2_quantile_restarts_the_belief():
    """NIS = sum (z - m)^2 / (v + q dt + r) against chi2(d) at 1 - jump_p."""
    def second(z, jump_p=1e-3):
        noise = BeliefNoise('m', np.zeros(2), np.zeros(2), np.ones(2))  # learned: q 0, s 1
        filt = BeliefFilter(BeliefConfig(jump_p=jump_p), noise)
        filt.update(0, [0.0, 0.0], [99.0, 99.0])  # v = 0.01 per dimension
        return filt.update(NS // 10, [z, z], [100.0, 100.0])  # r = 0.01: S = 0.02
    limit = np.sqrt(chi2_quantile(2, 1e-3) * 0.02 / 2)  # z at which NIS reaches the quantile
    assert second(0.95 * limit).reset == ''
    jumped = second(1.05 * limit)
    assert jumped.reset == 'jump'  # prior x expert, as at any restart
    np.testing.assert_allclose(jumped.mean, [1.05 * limit * 100 / 101] * 2)
    np.testing.assert_allclose(jumped.var, [1 / 101] * 2)
    assert second(10.0, jump_p=0.0).reset == ''  # 0: never
    guessed = BeliefFilter(BeliefConfig(process_noise=0.0))  # no learned noise: no jump test
    guessed.update(0, [0.0], [99.0])
    assert guessed.update(NS // 10, [10.0], [100.0]).reset == ''
    with pytest.raises(ConfigError, match='belief.jump_p must be < 1'):
        BeliefConfig(jump_p=1.0)


def test_bad_posterior_and_config_are_named():
    filt = BeliefFilter()
    with pytest.raises(InputError, match=r'means are \[1, 2\], precisions \[1, 3\]'):
        filt.update(0, [0.0, 0.0], [1.0, 1.0, 1.0])
    with pytest.raises(InputError, match='non-finite mean or a precision'):
        filt.update(0, [np.nan], [1.0])
    with pytest.raises(ConfigError, match=r'belief.reset_gap_s must be a finite number >= 0'):
        BeliefConfig(reset_gap_s=-1.0)
    with pytest.raises(ConfigError, match=r'belief.process_noise must be a finite number, got'):
        BeliefConfig(process_noise=float('nan'))
    with pytest.raises(ConfigError, match=r"unknown belief parameters \['q'\]"):
        BeliefConfig.from_dict({'q': 1.0})


def test_staleness_rule():
    cfg = BeliefConfig(stale_grace_s=0.1, stale_tau_s=0.5)
    assert staleness_weight(0.0, cfg) == 1.0
    assert staleness_weight(0.1, cfg) == 1.0
    assert staleness_weight(0.6, cfg) == pytest.approx(0.5)
    assert staleness_weight(1.1, cfg) == pytest.approx(1 / 3)
    ages = np.linspace(0.1, 5.0, 50)
    weights = [staleness_weight(a, cfg) for a in ages]
    assert all(b < a for a, b in zip(weights, weights[1:]))
    assert staleness_weight(100.0, BeliefConfig(stale_tau_s=0.0)) == 1.0


def test_belief_metrics():
    from llmos_ros.evaluation.belief_metrics import auroc, false_alarm_rate, finite, jitter
    assert auroc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert auroc(np.array([1.0]), np.array([1.0, 2.0])) == pytest.approx(0.25)  # tie counts half
    assert auroc(np.array([np.nan]), np.array([1.0])) is None
    assert false_alarm_rate(np.array([0.005, 0.5, np.nan, 0.02])) == pytest.approx(1 / 3)
    means = np.array([[0.0], [1.0], [3.0], [3.5]])
    labels = np.array(['a', 'a', 'b', 'b'])  # the step across the episode change is left out
    assert jitter(means, labels) == pytest.approx(0.75)
    assert finite({'x': float('nan'), 'y': {'z': 1.0}}) == {'x': None, 'y': {'z': 1.0}}


def test_time_since_the_episode_label_began():
    from llmos_ros.evaluation.belief_metrics import since_change
    stamps = np.array([0, 100, 250, 300, 400, 1000]) * 1_000_000
    labels = np.array(['a', 'a', 'b', 'b', 'a', 'a'])
    np.testing.assert_allclose(since_change(stamps, labels), [0, 0.1, 0, 0.05, 0, 0.6])
