"""The belief noise estimator on a synthetic random walk; storing and loading it (ROS-free)."""
import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from llmos_ros.belief_noise import (
    MEASUREMENTS,
    POWERS,
    BeliefNoise,
    estimate,
    fit_line,
    load_noise,
    measurement,
    prediction_nll,
    segments,
    sidecar_path,
)
from llmos_ros.belief_noise import (
    main as learn_main,
)
from llmos_ros.checkpoint import load_checkpoint
from llmos_ros.errors import CheckpointError, LlmosError
from llmos_ros.models.fusion import poe
from llmos_ros.models.fusions import get

NS = 1_000_000_000


def random_walk_plus_noise(q, r, seconds, rate_hz, seed, start_ns=0):
    """Stamps [N] (with arrival jitter) and y = z + e, z a random walk of variance q per s."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate_hz)
    stamps = start_ns + (np.arange(n) / rate_hz * NS).astype(np.int64) \
        + rng.integers(0, NS // 250, n)
    dt = np.diff(stamps, prepend=stamps[0]) / NS
    z = np.cumsum(rng.normal(size=(n, len(q))) * np.sqrt(np.asarray(q) * dt[:, None]), 0)
    return stamps, z + rng.normal(size=(n, len(r))) * np.sqrt(r)


def four_runs(q, r, seed=0):
    """Four 300 s runs at 30 Hz, 1000 s apart (four segments): stamps, y."""
    parts = [random_walk_plus_noise(q, r, 300.0, 30.0, seed + k, start_ns=k * 1000 * NS)
             for k in range(4)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def test_the_estimator_recovers_q_and_r_of_a_random_walk_plus_noise():
    q, r = np.array([0.05, 0.5, 2.0]), np.array([0.02, 0.3, 0.1])
    stamps, y = four_runs(q, r)
    v = np.array([0.01, 0.6, 0.001])  # what the experts claim
    noise = estimate('m', stamps, y, np.broadcast_to(v, y.shape))
    # E[(y(t + tau) - y(t))^2] = 2 r + q tau: the fit recovers both
    np.testing.assert_allclose(noise.process_noise, q, rtol=0.2)
    np.testing.assert_allclose(noise.measurement_noise, r, rtol=0.1, atol=0.03)
    np.testing.assert_allclose(noise.expert_scale, noise.measurement_noise / v, rtol=1e-9)
    assert noise.pairs > 30 * len(stamps) // 2 and noise.model_id == 'm'
    # pure noise: q = 0; a pure random walk: r = 0 (the fit never goes negative)
    still = estimate('m', *four_runs([0.0], [0.4], seed=7), np.ones((36000, 1)))
    assert still.process_noise[0] < 0.01
    assert still.measurement_noise[0] == pytest.approx(0.4, rel=0.1)
    walk = estimate('m', *four_runs([1.0], [0.0], seed=8), np.ones((36000, 1)))
    assert walk.process_noise[0] == pytest.approx(1.0, rel=0.2)
    assert walk.measurement_noise[0] < 0.05


def test_the_state_mean_and_stationary_variance_of_a_mean_reverting_walk_plus_noise():
    """The state z an Ornstein-Uhlenbeck process (mean m, stationary var S); y = z + e, var r."""
    rng = np.random.default_rng(4)
    m, big, theta, r = np.array([1.0, -2.0]), np.array([0.5, 2.0]), np.array([2.0, 1.0]), \
        np.array([0.2, 0.5])
    parts = []
    for k in range(4):  # four 300 s runs at 30 Hz, 1000 s apart
        n, dt = 9000, 1 / 30
        a = np.exp(-theta * dt)
        z = np.empty((n, 2))
        z[0] = m + rng.normal(size=2) * np.sqrt(big)
        for i in range(1, n):
            z[i] = m + a * (z[i - 1] - m) + rng.normal(size=2) * np.sqrt(big * (1 - a * a))
        stamps = k * 1000 * NS + (np.arange(n) * dt * NS).astype(np.int64)
        parts.append((stamps, z + rng.normal(size=(n, 2)) * np.sqrt(r)))
    stamps = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    noise = estimate('m', stamps, y, np.full_like(y, 0.01), max_lag_s=0.5)
    np.testing.assert_allclose(noise.state_mean, m, atol=0.1)
    np.testing.assert_allclose(noise.state_var, big, rtol=0.2)
    np.testing.assert_allclose(noise.state_var + noise.measurement_noise, y.var(0), rtol=1e-6)
    # q, the line's slope over the lags, is below the initial growth 2 theta S (the curve bends)
    assert np.all(noise.process_noise < 2 * theta * big)
    assert np.all(noise.process_noise > 0.5 * 2 * theta * big)


@pytest.mark.parametrize('truthful', [True, False])
def test_the_variance_power_is_the_one_under_which_the_filter_best_predicts(truthful):
    """Experts whose variance is each frame's noise get g = 1; a variance unrelated to it, 0."""
    rng = np.random.default_rng(5)
    stamps, z = four_runs([0.2, 0.2], [0.0, 0.0], seed=3)
    v = np.exp(rng.uniform(np.log(0.01), np.log(1.0), z.shape))  # what the experts claim
    noise_var = v if truthful else np.full_like(v, 0.1)
    y = z + rng.normal(size=z.shape) * np.sqrt(noise_var)
    noise = estimate('m', stamps, y, v)
    np.testing.assert_allclose(noise.expert_var, np.median(v, 0), rtol=1e-9)
    np.testing.assert_allclose(noise.expert_scale, noise.measurement_noise / noise.expert_var)
    assert noise.variance_power >= 0.75 if truthful else noise.variance_power == 0.0
    fits = {g: prediction_nll(dataclasses.replace(noise, variance_power=g), stamps, y, v,
                              segments(stamps)) for g in POWERS}
    assert min(fits, key=fits.get) == noise.variance_power
    assert fits[1.0] - fits[0.0] < -0.1 if truthful else fits[0.0] - fits[1.0] < -0.1
    assert estimate('m', stamps, y, v, powers=(0.5,)).variance_power == 0.5  # given: kept


def test_fit_line_is_least_squares_with_non_negative_parameters():
    taus = np.array([0.5, 1.0, 2.0, 3.0])
    q, r = fit_line(taus, np.stack([0.4 + 0.3 * taus, 1.0 - 0.1 * taus, 0.5 * taus - 0.2,
                                    [np.nan] * 4], 1))
    np.testing.assert_allclose([q[0], r[0]], [0.3, 0.2])
    assert q[1] == 0 and r[1] == pytest.approx(np.mean(1.0 - 0.1 * taus) / 2)  # flat: no drift
    assert r[2] == 0 and q[2] == pytest.approx(np.sum(taus * (0.5 * taus - 0.2))
                                               / np.sum(taus ** 2))
    assert np.isnan(q[3]) and np.isnan(r[3])


def test_segments_end_where_the_filter_resets():
    s = np.array([0, 1, 2, 5, 4, 6, 6, 7]) * NS // 2  # 1.5 s gap kept; back; equal stamp
    runs = segments(s, reset_gap_s=1.0)
    assert [list(x) for x in runs] == [[0, 1, 2], [3], [4, 5], [6, 7]]
    runs = segments(np.arange(4) * NS // 10, groups=np.array([0, 0, 1, 1]))
    assert [list(x) for x in runs] == [[0, 1], [2, 3]]


def test_dimensions_without_data_fall_back_and_too_little_data_is_an_error():
    stamps, y = random_walk_plus_noise([0.5, 0.5], [0.1, 0.1], 20.0, 30.0, 1)
    y[:, 1] = np.nan  # a modality never present: its private latent is never measured
    noise = estimate('m', stamps, y, np.ones_like(y), fallback_q=0.05)
    assert noise.process_noise[1] == 0.05 and noise.expert_scale[1] == 1.0
    with pytest.raises(LlmosError, match='cannot learn the belief noise'):
        estimate('m', np.array([0, 3 * NS]), np.zeros((2, 1)), np.ones((2, 1)))


def test_noise_round_trips_and_bad_data_is_named():
    noise = BeliefNoise('m', np.array([0.1, 0.2]), np.array([1.0, 0.0]), np.array([3.0, 1e-3]),
                        pairs=7)
    again = BeliefNoise.from_dict(json.loads(json.dumps(noise.to_dict())))
    assert again.model_id == 'm' and again.pairs == 7
    np.testing.assert_array_equal(again.expert_scale, noise.expert_scale)
    with pytest.raises(CheckpointError, match='x.json: not a belief noise model'):
        BeliefNoise.from_dict({'model_id': 'm'}, 'x.json')
    with pytest.raises(CheckpointError, match='equally long lists of finite numbers >= 0'):
        BeliefNoise.from_dict({**noise.to_dict(), 'process_noise': [-1.0, 0.2]})
    assert again.measurement == 'fusion' and again.state_var is None  # none given: the walk
    state = dataclasses.replace(noise, state_mean=np.array([0.5, -1.0]),
                                state_var=np.array([2.0, 1e-6]))
    back = BeliefNoise.from_dict(json.loads(json.dumps(state.to_dict())))
    np.testing.assert_array_equal(back.state_mean, state.state_mean)
    np.testing.assert_array_equal(back.state_var, state.state_var)
    with pytest.raises(CheckpointError, match='state_mean and state_var must both be given'):
        BeliefNoise.from_dict({**noise.to_dict(), 'state_mean': [0.0, 0.0]})
    with pytest.raises(CheckpointError, match='state_var > 0'):
        BeliefNoise.from_dict({**state.to_dict(), 'state_var': [1.0, 0.0]})
    stored_before = {k: v for k, v in noise.to_dict().items() if k != 'measurement'}
    assert BeliefNoise.from_dict(stored_before).measurement == 'product'  # what it was learned of
    with pytest.raises(CheckpointError, match="measurement must be one of.*got 'mean'"):
        BeliefNoise.from_dict({**noise.to_dict(), 'measurement': 'mean'})
    assert again.variance_power == 1.0 and again.expert_var is None  # stored before: g = 1
    tempered = dataclasses.replace(noise, variance_power=0.25, expert_var=np.array([0.5, 2.0]))
    back = BeliefNoise.from_dict(json.loads(json.dumps(tempered.to_dict())))
    assert back.variance_power == 0.25
    np.testing.assert_array_equal(back.expert_var, tempered.expert_var)
    for bad in ({'variance_power': 1.5}, {'expert_var': [0.5, 0.0]},
                {'expert_var': [0.5]}):
        with pytest.raises(CheckpointError, match='variance_power must be in'):
            BeliefNoise.from_dict({**tempered.to_dict(), **bad})
    with pytest.raises(CheckpointError, match='variance_power must be in'):
        BeliefNoise.from_dict({**noise.to_dict(), 'variance_power': 0.5})  # no expert_var


@pytest.mark.parametrize('kind', MEASUREMENTS)
def test_the_measurement_is_the_fusion_or_product_on_the_shared_part_and_own_private_parts(
        sim_model, kind):
    loaded = load_checkpoint(sim_model[1])
    model = loaded.model
    assert model.fusion == 'mopoe' and model.private_dim > 0
    gen = torch.Generator().manual_seed(0)
    m, b, d, p = len(model.names), 4, model.shared_dim, model.private_dim
    mus, pmus = torch.randn(m, b, d, generator=gen), torch.randn(m, b, p, generator=gen)
    lvs, plvs = torch.randn(m, b, d, generator=gen), torch.randn(m, b, p, generator=gen)
    mask = torch.tensor([[True, True, False, False], [True, False, True, False],
                         [True, True, True, False]])  # sample 3: no expert at all
    means, precs = measurement(model, (mus, lvs, pmus, plvs), mask, kind)
    shared = (poe(mus, lvs, mask, prior_expert=False) if kind == 'product'
              else get('mopoe').measurement(mus, lvs, mask))
    np.testing.assert_allclose(means[:3, :d], shared[0][:3].double().numpy(), rtol=1e-6)
    np.testing.assert_allclose(precs[:3, :d], np.exp(-shared[1][:3].double().numpy()),
                               rtol=1e-5)
    if kind == 'fusion':  # the mixture is not the product when three experts disagree
        product = poe(mus, lvs, mask, prior_expert=False)[0][0].double().numpy()
        assert not np.allclose(means[0, :d], product, atol=1e-3)
    for i, name in enumerate(model.names):
        part = model.private_slice(name)
        for row in range(b):
            if mask[i, row]:  # the modality's own expert on its private part
                np.testing.assert_allclose(means[row, part], pmus[i, row].double().numpy(),
                                           rtol=1e-6)
                np.testing.assert_allclose(precs[row, part],
                                           np.exp(-plvs[i, row].double().numpy()), rtol=1e-6)
            else:  # nobody informs it
                assert np.all(precs[row, part] == 0) and np.all(means[row, part] == 0)
    assert np.all(precs[3] == 0)


def test_llmos_train_stores_the_noise_of_its_model_and_a_sidecar_wins(sim_model, tmp_path):
    bag, model = sim_model
    loaded = load_checkpoint(model)
    noise, why = load_noise(model, loaded)  # learned on the validation split by llmos-train
    assert why == '' and noise.model_id == loaded.model_id
    assert noise.process_noise.shape == (loaded.model.latent_size,) and noise.pairs > 0
    assert np.all(noise.expert_scale > 0) and np.any(noise.process_noise != 0.05)
    assert noise.measurement == 'fusion'
    # an older checkpoint has none: the reason names the command that learns it
    path = tmp_path / 'old.pt'
    shutil.copy(model, path)
    old = dataclasses.replace(loaded, extra={})
    none, why = load_noise(path, old)
    assert none is None and f'python -m llmos_ros.belief_noise --model {path}' in why
    assert learn_main(['--model', str(path), '--bag', str(bag)]) == 0  # on the training bag
    side, why = load_noise(path, old)
    assert why == '' and side.pairs > noise.pairs  # the whole bag, not its held-out end
    assert side.measurement == 'fusion'
    assert learn_main(['--model', str(path), '--bag', str(bag), '--measurement', 'product']) == 0
    assert load_noise(path, old)[0].measurement == 'product'
    # --validation: what llmos-train stored, learned again
    assert learn_main(['--model', str(path), '--bag', str(bag), '--validation']) == 0
    again = load_noise(path, old)[0]
    assert again.pairs == noise.pairs and again.measurement == 'fusion'
    for field in ('process_noise', 'measurement_noise', 'expert_scale'):
        np.testing.assert_allclose(getattr(again, field), getattr(noise, field), rtol=1e-4)
    assert again.variance_power == noise.variance_power and noise.variance_power in POWERS
    assert learn_main(['--model', str(path), '--bag', str(bag), '--validation',
                       '--variance-power', '0.3']) == 0  # fixed, not learned
    assert load_noise(path, old)[0].variance_power == 0.3
    with pytest.raises(SystemExit):
        learn_main(['--model', str(path), '--bag', str(bag), '--variance-power', '1.5'])
    other = dataclasses.replace(loaded, model_id='x')
    assert f'calibration of model {loaded.model_id}, not of x' in load_noise(path, other)[1]
    sidecar_path(path).write_text('{')
    assert 'unreadable' in load_noise(path, old)[1]


def test_llmos_eval_uses_the_learned_noise_and_an_old_checkpoint_falls_back(sim_model, tmp_path,
                                                                            capsys):
    from llmos_ros.evaluation.options import EvalOptions, Loaded
    from llmos_ros.evaluation.scores import tracker_for
    from llmos_ros.inference import PerceptionEngine
    bag, model = sim_model
    loaded = load_checkpoint(model)
    engine = PerceptionEngine(loaded)
    opts = EvalOptions(bag=str(bag), model=str(model), out=str(tmp_path))
    tracker = tracker_for(opts, Loaded(tmp_path, loaded, engine.device), engine)
    assert tracker.filter.noise_source == 'learned'
    np.testing.assert_array_equal(tracker.filter.process_noise,
                                  loaded.extra['belief']['process_noise'])
    np.testing.assert_array_equal(tracker.filter.expert_scale,
                                  loaded.extra['belief']['expert_scale'])
    old = dataclasses.replace(loaded, extra={})  # trained before: no extra['belief'], no sidecar
    opts = EvalOptions(bag=str(bag), model=str(tmp_path / 'old.pt'), out=str(tmp_path))
    tracker = tracker_for(opts, Loaded(tmp_path, old, engine.device), PerceptionEngine(old))
    assert tracker.filter.noise_source == 'fallback' and tracker.filter.process_noise == 0.05
    assert tracker.filter.expert_scale == 1.0
    assert 'belief process noise 0.05 for every dimension' in capsys.readouterr().err
