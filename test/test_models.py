"""Tests of the multimodal VAE: fusion closed forms, stability, masking, objectives, training."""
import itertools
import math

import pytest
import torch

from llmos_ros.config import Config
from llmos_ros.models import MultimodalVAE
from llmos_ros.models.fusion import Mixture, moe, poe, subsets
from llmos_ros.models.fusions import fuse
from llmos_ros.models.fusions.mopoe import mopoe
from llmos_ros.models.networks import Decoder, Encoder
from llmos_ros.models.objectives import kl_std_normal, kl_weight

FUSIONS = ('poe', 'moe', 'mopoe', 'mmvae_plus')


def make_cfg(fusion='mopoe', three=False, **model):
    mods = {
        'cam': {'kind': 'image', 'topic': '/cam', 'msg_type': 'sensor_msgs/msg/Image',
                'height': 8, 'width': 9},
        'tax': {'kind': 'taxels', 'topic': '/tax', 'msg_type': 'llmos_ros/msg/TactileArray',
                'rows': 3, 'cols': 2, 'channels': 2, 'window_s': 0.0},
    }
    if three:
        mods['mic'] = {'kind': 'audio', 'topic': '/mic', 'msg_type': 'llmos_ros/msg/AudioChunk',
                       'n_mels': 4, 'window_s': 0.1, 'hop_s': 0.025, 'sample_rate': 8000}
    m = {'fusion': fusion, 'latent_dim': 3, 'private_dim': 2, 'hidden': 16, 'k_samples': 3,
         'warmup_steps': 0}
    m.update(model)
    return Config.from_dict({'modalities': mods, 'model': m})


def make_batch(model, b=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {n: torch.randn((b,) + model.shapes[n], generator=gen) for n in model.names}


def t(*vals):
    return torch.tensor(vals, dtype=torch.float32)


# ---- fusion closed forms ---------------------------------------------------------------------

def test_poe_two_experts_and_prior_by_hand():
    mu1, v1, mu2, v2 = 1.5, 0.5, -2.0, 4.0
    mus = t(mu1, mu2).reshape(2, 1, 1)
    lvs = torch.log(t(v1, v2)).reshape(2, 1, 1)
    mu, lv = poe(mus, lvs, torch.ones(2, 1, dtype=torch.bool))
    prec = 1.0 + 1 / v1 + 1 / v2
    assert lv.item() == pytest.approx(-math.log(prec), rel=1e-5)
    assert mu.item() == pytest.approx((mu1 / v1 + mu2 / v2) / prec, rel=1e-5)
    # per-sample masks: sample 0 has both, sample 1 only expert 2, sample 2 none (prior)
    mus = mus.expand(2, 3, 1)
    lvs = lvs.expand(2, 3, 1)
    mask = torch.tensor([[True, False, False], [True, True, False]])
    mu, lv = poe(mus, lvs, mask)
    assert mu[0].item() == pytest.approx((mu1 / v1 + mu2 / v2) / prec, rel=1e-5)
    assert mu[1].item() == pytest.approx((mu2 / v2) / (1 + 1 / v2), rel=1e-5)
    assert lv[1].item() == pytest.approx(-math.log(1 + 1 / v2), rel=1e-5)
    assert mu[2].item() == 0.0 and lv[2].item() == pytest.approx(0.0, abs=1e-7)
    # without prior expert a single expert is returned unchanged
    mu, lv = poe(mus, lvs, mask, prior_expert=False)
    assert mu[1].item() == pytest.approx(mu2, rel=1e-6)
    assert lv[1].item() == pytest.approx(math.log(v2), rel=1e-6)


def test_moe_moments_and_dropped_component():
    mus = t(1.0, -3.0).reshape(2, 1, 1)
    lvs = torch.log(t(0.5, 2.0)).reshape(2, 1, 1)
    mix = moe(mus, lvs, torch.ones(2, 1, dtype=torch.bool))
    assert torch.allclose(mix.weights, t(0.5, 0.5).reshape(2, 1))
    mu, lv = mix.gaussian()
    mean = 0.5 * 1.0 + 0.5 * -3.0
    var = 0.5 * (0.5 + 1.0) + 0.5 * (2.0 + 9.0) - mean ** 2
    assert mu.item() == pytest.approx(mean, rel=1e-6)
    assert lv.exp().item() == pytest.approx(var, rel=1e-5)
    mix = moe(mus, lvs, torch.tensor([[False], [True]]))
    mu, lv = mix.gaussian()
    assert mu.item() == pytest.approx(-3.0, rel=1e-6)
    assert lv.item() == pytest.approx(math.log(2.0), rel=1e-5)


def test_mopoe_components_are_subset_products():
    assert subsets(3) == [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]
    mus = t(1.0, -2.0, 1.0, 0.5).reshape(2, 2, 1)  # [M=2, B=2, D=1]
    lvs = torch.log(t(0.5, 1.0, 2.0, 0.25)).reshape(2, 2, 1)
    mask = torch.tensor([[True, True], [True, False]])
    mix = mopoe(mus, lvs, mask)
    assert mix.mus.shape == (3, 2, 1)
    # sample 0: subsets {0}, {1}, {0,1} all valid, uniform weights
    assert torch.allclose(mix.weights[:, 0], torch.full((3,), 1 / 3))
    assert mix.mus[0, 0].item() == pytest.approx(1.0) and mix.mus[1, 0].item() == 1.0
    prec = 1 / 0.5 + 1 / 2.0
    assert mix.logvars[2, 0].item() == pytest.approx(-math.log(prec), rel=1e-5)
    assert mix.mus[2, 0].item() == pytest.approx((1.0 / 0.5 + 1.0 / 2.0) / prec, rel=1e-5)
    # sample 1: modality 1 missing -> only {0} is a component, the posterior is expert 0
    assert mix.valid[:, 1].tolist() == [True, False, False]
    mu, lv = mix.gaussian()
    assert mu[1].item() == pytest.approx(-2.0, rel=1e-6)
    assert lv[1].item() == pytest.approx(0.0, abs=1e-6)
    # mixture moments for sample 0 against the formula
    cm, cv = mix.mus[:, 0, 0], mix.logvars[:, 0, 0].exp()
    mean = cm.mean()
    var = (cv + cm ** 2).mean() - mean ** 2
    assert mu[0].item() == pytest.approx(mean.item(), rel=1e-5)
    assert lv[0].exp().item() == pytest.approx(var.item(), rel=1e-4)


def test_mixture_selection_uses_only_valid_components():
    mus = torch.arange(3.0).reshape(3, 1, 1).expand(3, 2, 1).contiguous()
    lvs = torch.full((3, 2, 1), -60.0)  # samples equal the component means
    mix = moe(mus, lvs, torch.tensor([[True, False], [False, True], [True, True]]))
    gen = torch.Generator().manual_seed(0)
    picks = torch.stack([mix.select(gen) for _ in range(300)])
    assert set(picks[:, 0].tolist()) == {0, 2} and set(picks[:, 1].tolist()) == {1, 2}
    assert 0.35 < (picks[:, 0] == 0).float().mean() < 0.65
    z = mix.rsample(gen)
    assert round(z[0].item(), 6) in (0.0, 2.0) and round(z[1].item(), 6) in (1.0, 2.0)


@pytest.mark.parametrize('fusion', FUSIONS)
@pytest.mark.parametrize('extreme', [30.0, 80.0])
def test_extreme_variances_stay_finite(fusion, extreme):
    mus = t(0.3, -0.7, 5.0).reshape(3, 1, 1).expand(3, 2, 1).clone().requires_grad_(True)
    lvs = t(extreme, -extreme, 0.0).reshape(3, 1, 1).expand(3, 2, 1).clone().requires_grad_(True)
    mask = torch.tensor([[True, True], [True, False], [True, True]])
    mix = fuse(fusion, mus, lvs, mask)
    mu, lv = mix.gaussian()
    assert torch.isfinite(mu).all() and torch.isfinite(lv).all()
    assert torch.isfinite(mix.mus).all() and torch.isfinite(mix.logvars).all()
    (mu.sum() + lv.sum() + kl_std_normal(mu, lv).sum()).backward()
    assert torch.isfinite(mus.grad).all() and torch.isfinite(lvs.grad).all()
    if fusion == 'poe':
        # the near-certain expert dominates the product
        assert mu[0].item() == pytest.approx(-0.7, abs=1e-4)
        assert lv[0].item() == pytest.approx(-extreme, rel=1e-4)


# ---- networks ---------------------------------------------------------------------------------

@pytest.mark.parametrize('shape', [(1, 8, 9), (3, 13, 21), (1, 32, 7), (2, 3, 2), (1, 1, 5)])
def test_networks_fit_any_shape(shape):
    enc, dec = Encoder(shape, 16, 4), Decoder(shape, 16, 4)
    mu, lv = enc(torch.randn((2,) + shape))
    assert mu.shape == (2, 4) and lv.shape == (2, 4)
    assert dec(mu).shape == (2,) + shape
    assert dec.log_scale().ndim == 0


# ---- the model ---------------------------------------------------------------------------------

def _all_finite_grads(model):
    return all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize('fusion', FUSIONS)
def test_every_subset_gives_finite_loss_and_gradients(fusion):
    torch.manual_seed(0)
    model = MultimodalVAE(make_cfg(fusion, three=True))
    batch = make_batch(model, b=3)
    names = model.names
    for k in range(1, len(names) + 1):
        for sub in itertools.combinations(names, k):
            model.zero_grad()
            present = {n: torch.full((3,), n in sub) for n in names}
            loss, logs = model.loss(batch, present, step=5)
            assert torch.isfinite(loss) and math.isfinite(logs['loss'])
            loss.backward()
            assert _all_finite_grads(model)
            for n in names:
                grads = [p.grad for p in model.encoders[n].parameters()]
                used = any(g is not None and g.abs().sum() > 0 for g in grads)
                assert used == (n in sub), (sub, n)
    # mixed per-sample presence in one batch, including an empty sample
    present = {'cam': torch.tensor([True, False, False]), 'tax': torch.tensor([True, True, False]),
               'mic': torch.tensor([False, True, False])}
    model.zero_grad()
    loss, _ = model.loss(batch, present, step=5)
    loss.backward()
    assert torch.isfinite(loss) and _all_finite_grads(model)


@pytest.mark.parametrize('fusion', FUSIONS)
def test_missing_modality_values_do_not_matter(fusion):
    torch.manual_seed(0)
    model = MultimodalVAE(make_cfg(fusion))
    batch = make_batch(model, b=3)
    present = {'cam': torch.tensor([True, False, True]), 'tax': torch.tensor([False, True, True])}
    other = dict(batch)
    other['cam'] = batch['cam'].clone()
    other['cam'][1] = float('nan')
    other['tax'] = batch['tax'].clone()
    other['tax'][0] = 1e6
    mu1, lv1 = model.encode(batch, present)
    mu2, lv2 = model.encode(other, present)
    assert torch.equal(mu1, mu2) and torch.equal(lv1, lv2)
    p1, p2 = model.predict(batch, present), model.predict(other, present)
    assert all(torch.equal(p1[n], p2[n]) for n in model.names)
    torch.manual_seed(1)
    l1, _ = model.loss(batch, present, step=3)
    torch.manual_seed(1)
    l2, _ = model.loss(other, present, step=3)
    assert l1.item() == l2.item()
    l2.backward()
    assert _all_finite_grads(model)
    # but a present modality's values do matter
    changed = dict(batch)
    changed['tax'] = batch['tax'] + 1.0
    mu3, _ = model.encode(changed, present)
    assert not torch.allclose(mu3[1:], mu1[1:])
    assert torch.equal(mu3[0], mu1[0])


def test_absent_key_means_missing_and_encode_shapes():
    model = MultimodalVAE(make_cfg('poe'))
    batch = make_batch(model, b=2)
    mu, lv = model.encode({'cam': batch['cam']})
    mu2, _ = model.encode(batch, {'cam': torch.ones(2, dtype=torch.bool),
                                  'tax': torch.zeros(2, dtype=torch.bool)})
    assert torch.equal(mu, mu2) and mu.shape == (2, 3)
    preds = model.predict({'cam': batch['cam']})
    assert preds['tax'].shape == (2, 2, 3, 2) and preds['cam'].shape == (2, 1, 8, 9)
    decoded = model.decode(mu)
    assert decoded['cam'][1].ndim == 0


def test_mmvae_plus_latent_layout():
    model = MultimodalVAE(make_cfg('mmvae_plus'))
    assert model.latent_size == 3 + 2 * 2
    assert model.latent_layout() == {'shared_dim': 3, 'private_dim': 2,
                                     'private_modalities': ['cam', 'tax']}
    batch = make_batch(model, b=2)
    present = {'cam': torch.tensor([True, True]), 'tax': torch.tensor([True, False])}
    mu, lv = model.encode(batch, present)
    assert mu.shape == (2, 7)
    tax = model.private_slice('tax')
    assert torch.equal(mu[1, tax], torch.zeros(2)) and torch.equal(lv[1, tax], torch.zeros(2))
    assert not torch.equal(mu[0, tax], torch.zeros(2))
    # a decoder sees the shared part and its own private part only
    z = torch.randn(1, 7)
    z2 = z.clone()
    z2[0, model.private_slice('cam')] += 1.0
    assert torch.equal(model.decode(z)['tax'][0], model.decode(z2)['tax'][0])
    assert not torch.equal(model.decode(z)['cam'][0], model.decode(z2)['cam'][0])
    assert MultimodalVAE(make_cfg('mopoe', private_latents=False)).latent_layout()[
        'private_modalities'] == []
    assert MultimodalVAE(make_cfg('mopoe')).latent_layout()['private_modalities'] == ['cam', 'tax']
    assert MultimodalVAE(make_cfg('poe')).latent_layout()['private_modalities'] == []


def test_kl_warmup_and_likelihood_scale():
    assert kl_weight(0, 2.0, 10) == 0.0
    assert kl_weight(5, 2.0, 10) == pytest.approx(1.0)
    assert kl_weight(50, 2.0, 10) == 2.0 and kl_weight(0, 2.0, 0) == 2.0
    model = MultimodalVAE(make_cfg('poe', likelihood_scale={'tax': 0.0}, warmup_steps=10))
    batch = make_batch(model, b=2)
    present = {'cam': torch.zeros(2, dtype=torch.bool), 'tax': torch.ones(2, dtype=torch.bool)}
    loss, _ = model.loss(batch, present, step=0)  # no KL and tax weighted 0: nothing to learn
    assert loss.item() == 0.0


def test_likelihoods_are_balanced_by_modality_size():
    """Camera 1x8x9 = 72 values, taxels 2x3x2 = 12: tax weighs 6 unless balancing is off."""
    assert MultimodalVAE(make_cfg('mopoe')).likelihood_scale == {'cam': 1.0, 'tax': 6.0}
    scaled = MultimodalVAE(make_cfg('mopoe', balance_likelihoods=True,
                                    likelihood_scale={'tax': 0.5, 'cam': 2.0}))
    assert scaled.likelihood_scale == {'cam': 2.0, 'tax': 3.0}
    plain = MultimodalVAE(make_cfg('mopoe', balance_likelihoods=False,
                                   likelihood_scale={'tax': 0.5}))
    assert plain.likelihood_scale == {'cam': 1.0, 'tax': 0.5}
    # the objective uses them: with the KL off, a tax-only batch's loss is 6x the unbalanced one
    torch.manual_seed(0)
    one = MultimodalVAE(make_cfg('poe', balance_likelihoods=False, warmup_steps=10))
    six = MultimodalVAE(make_cfg('poe', balance_likelihoods=True, warmup_steps=10))
    six.load_state_dict(one.state_dict())
    batch = make_batch(one, b=3)
    present = {'cam': torch.zeros(3, dtype=torch.bool), 'tax': torch.ones(3, dtype=torch.bool)}
    torch.manual_seed(1)
    low, _ = one.loss(batch, present, step=0)
    torch.manual_seed(1)
    high, _ = six.loss(batch, present, step=0)
    assert high.item() == pytest.approx(6.0 * low.item(), rel=1e-5)


@pytest.mark.parametrize('fusion', ['moe', 'mmvae_plus'])
def test_iwae_loss_reports_the_bound(fusion):
    torch.manual_seed(0)
    model = MultimodalVAE(make_cfg(fusion))
    loss, logs = model.loss(make_batch(model), None, step=1)
    assert loss.item() == pytest.approx(-logs['iwae_bound'], rel=1e-5)


def _synthetic(n, gen):
    """Two modalities driven by one 2-d hidden state."""
    s = torch.randn(n, 2, generator=gen)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 8), torch.linspace(-1, 1, 9), indexing='ij')
    cam = torch.exp(-((xx - 0.5 * s[:, :1, None]) ** 2 + (yy - 0.5 * s[:, 1:, None]) ** 2) / 0.2)
    cam = (cam - 0.3) / 0.3
    w = torch.randn(2, 12, generator=gen)
    tax = (s @ w).reshape(n, 2, 3, 2) + 0.05 * torch.randn(n, 2, 3, 2, generator=gen)
    return {'cam': cam.unsqueeze(1), 'tax': tax}


@pytest.mark.parametrize('fusion', FUSIONS)
def test_few_steps_reduce_the_loss(fusion):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = MultimodalVAE(make_cfg(fusion, latent_dim=2, hidden=32))
    data = _synthetic(64, gen)
    present = {n: torch.rand(64, generator=gen) < 0.8 for n in ('cam', 'tax')}

    def evaluate():
        torch.manual_seed(123)
        with torch.no_grad():
            return model.loss(data, present, step=10 ** 6)[0].item()

    before = evaluate()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(40):
        idx = torch.randint(0, 64, (16,), generator=gen)
        loss, _ = model.loss({n: v[idx] for n, v in data.items()},
                             {n: v[idx] for n, v in present.items()}, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = evaluate()
    assert after < before - 0.1 * abs(before), (before, after)


def test_mixture_dataclass_single_component_is_exact():
    mix = Mixture(t(1.0).reshape(1, 1, 1), t(-2.0).reshape(1, 1, 1), t(1.0).reshape(1, 1))
    mu, lv = mix.gaussian()
    assert mu.item() == 1.0 and lv.item() == -2.0


@pytest.mark.parametrize('cross_private', ['own', 'prior'])
def test_mopoe_private_kl_is_the_expected_kl_of_the_private_latents_used(cross_private):
    """kl_private = sum over present m of P(w_m is used) KL(q(w_m | x_m) || N(0, I))."""
    torch.manual_seed(0)
    model = MultimodalVAE(make_cfg('mopoe', three=True, cross_private=cross_private))
    batch = make_batch(model, b=5)
    present = {'cam': torch.tensor([1, 1, 0, 1, 1], dtype=torch.bool),
               'tax': torch.tensor([1, 0, 1, 1, 0], dtype=torch.bool),
               'mic': torch.tensor([1, 1, 1, 0, 0], dtype=torch.bool)}
    _, logs = model.loss(batch, present, step=10 ** 6)
    xs, mask = model.prepare(batch, present)
    _, _, pmus, plvs = model.experts(xs, mask)
    kl = kl_std_normal(pmus, plvs)  # [M, B]
    expect = []
    for b in range(5):
        here = [i for i in range(3) if mask[i, b]]
        subs = [s for s in subsets(3) if set(s) <= set(here)]  # uniform over valid subsets
        use = {i: (1.0 if cross_private == 'own'
                   else sum(i in s for s in subs) / len(subs)) for i in here}
        expect.append(sum(use[i] * kl[i, b].item() for i in here))
    assert logs['kl_private'] == pytest.approx(sum(expect) / 5, rel=1e-5)


def test_mopoe_cross_private_must_be_own_or_prior():
    with pytest.raises(Exception, match="model.cross_private must be 'own' or 'prior'"):
        make_cfg('mopoe', cross_private='aux')


def test_time_shift_likelihood_is_the_gaussian_marginalised_over_circular_shifts():
    """Closed form: log (1/T) sum_tau N(x | roll(mean, tau), s^2), each term by direct sum."""
    from llmos_ros.models.objectives import gaussian_log_prob, shifted_gaussian_log_prob
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 4, 7, generator=gen, dtype=torch.float64)
    mean = torch.randn(2, 3, 1, 4, 7, generator=gen, dtype=torch.float64)  # [N, B, ...]
    log_scale = torch.tensor(0.3, dtype=torch.float64)
    direct = torch.logsumexp(torch.stack(
        [gaussian_log_prob(x, torch.roll(mean, tau, -1), log_scale) for tau in range(7)], -1),
        -1) - math.log(7)
    got = shifted_gaussian_log_prob(x, mean, log_scale, (None,))
    assert got.shape == (2, 3)
    torch.testing.assert_close(got, direct, rtol=1e-10, atol=1e-9)
    # the input's position in time does not matter; its content does
    every = (None,)
    torch.testing.assert_close(
        shifted_gaussian_log_prob(torch.roll(x, 3, -1), mean, log_scale, every),
        got, rtol=1e-10, atol=1e-9)
    assert not torch.allclose(shifted_gaussian_log_prob(x.flip(-2), mean, log_scale, every), got)
    # one time step: the plain Gaussian
    x1, mean1 = x[..., :1], mean[..., :1]
    torch.testing.assert_close(shifted_gaussian_log_prob(x1, mean1, log_scale, every),
                               gaussian_log_prob(x1, mean1, log_scale))


def test_space_shift_likelihood_is_the_gaussian_marginalised_over_shifts_within_reach():
    """Closed form: log (1/|S|) sum over |dy| <= 2, |dx| <= 1 of N(x | roll(mean, (dy, dx)))."""
    from llmos_ros.models.objectives import gaussian_log_prob, shifted_gaussian_log_prob
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 2, 7, 9, generator=gen, dtype=torch.float64)
    mean = torch.randn(2, 3, 2, 7, 9, generator=gen, dtype=torch.float64)
    log_scale = torch.tensor(-0.2, dtype=torch.float64)
    shifts = [(dy, dx) for dy in range(-2, 3) for dx in range(-1, 2)]
    direct = torch.logsumexp(torch.stack(
        [gaussian_log_prob(x, torch.roll(mean, s, (-2, -1)), log_scale) for s in shifts], -1),
        -1) - math.log(len(shifts))
    got = shifted_gaussian_log_prob(x, mean, log_scale, (2, 1))
    assert got.shape == (2, 3)
    torch.testing.assert_close(got, direct, rtol=1e-10, atol=1e-9)
    # a reach as wide as the side takes every shift of that axis once
    every = [(dy, dx) for dy in range(7) for dx in range(-1, 2)]
    direct = torch.logsumexp(torch.stack(
        [gaussian_log_prob(x, torch.roll(mean, s, (-2, -1)), log_scale) for s in every], -1),
        -1) - math.log(len(every))
    torch.testing.assert_close(shifted_gaussian_log_prob(x, mean, log_scale, (3, 1)), direct,
                               rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize('side, shift, reach', [(28, 0.0625, 2), (64, 0.0625, 4), (8, 0.0625, 1),
                                                (32, 0.125, 4)])
def test_an_image_with_the_space_shift_likelihood_reaches_a_part_of_each_side(side, shift, reach):
    cfg = make_cfg('mopoe', three=True)
    cam = cfg.modalities['cam']
    cam.height, cam.width, cam.max_shift, cam.likelihood = side, side // 2, shift, 'space_shift'
    model = MultimodalVAE(cfg)
    assert model.shift_reach['cam'] == (reach, max(1, round(side // 2 * shift)))
    # the objective uses it: the image term is the shifted Gaussian around the decoded image
    from llmos_ros.models.objectives import log_likelihoods, shifted_gaussian_log_prob
    z = torch.randn(1, 2, model.latent_size)
    xs, _ = model.prepare(make_batch(model, b=2), None)
    i = model.names.index('cam')
    mean, log_scale = model.decode(z[0])['cam']
    torch.testing.assert_close(
        log_likelihoods(model, z, xs)[i, 0],
        model.likelihood_scale['cam'] * shifted_gaussian_log_prob(xs[i], mean, log_scale,
                                                                  model.shift_reach['cam']))
    assert model.shift_reach['mic'] == (None,)


def test_audio_and_images_are_trained_with_shift_likelihoods_unless_configured():
    model = MultimodalVAE(make_cfg('mopoe', three=True))
    assert model.cfg.modalities['mic'].likelihood == 'time_shift'
    assert model.cfg.modalities['cam'].likelihood == 'space_shift'
    assert model.cfg.modalities['tax'].likelihood == 'gaussian'
    assert model.shift_reach == {'mic': (None,), 'cam': (1, 1)}  # 8 x 9 pixels: 1 px
    plain = make_cfg('mopoe', three=True)
    plain.modalities['mic'].likelihood = 'gaussian'
    plain.modalities['cam'].likelihood = 'gaussian'
    assert MultimodalVAE(plain).shift_reach == {}
    # the objective uses it: the audio term of a rolled window under the same decoded mean
    from llmos_ros.models.objectives import log_likelihoods
    batch = make_batch(model, b=2)
    z = torch.randn(1, 2, model.latent_size)
    xs, _ = model.prepare(batch, None)
    i = model.names.index('mic')
    rolled = list(xs)
    rolled[i] = torch.roll(xs[i], 2, -1)
    torch.testing.assert_close(log_likelihoods(model, z, rolled)[i],
                               log_likelihoods(model, z, xs)[i])
    assert not torch.allclose(log_likelihoods(MultimodalVAE(plain), z, rolled)[i],
                              log_likelihoods(MultimodalVAE(plain), z, xs)[i])
