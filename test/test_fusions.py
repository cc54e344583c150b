"""The fusion registry: names, errors, latent layout per fusion, posterior and objective."""
import pytest
import torch

from llmos_ros.config import Config, ModelConfig
from llmos_ros.errors import ConfigError
from llmos_ros.models import MultimodalVAE, fusions
from llmos_ros.models.fusion import Mixture


def test_registry_names_and_unknown_fusion_error():
    assert fusions.names() == ('poe', 'moe', 'mopoe', 'mmvae_plus')
    with pytest.raises(ConfigError, match=r"model\.fusion must be one of \('poe'.*got 'concat'"):
        fusions.get('concat')
    with pytest.raises(ValueError, match='registered twice'):
        fusions.register(fusions.get('poe'))


@pytest.mark.parametrize('fusion, private_latents, size', [
    ('poe', True, 0), ('moe', True, 0), ('mopoe', True, 8), ('mopoe', False, 0),
    ('mmvae_plus', False, 8)])
def test_latent_layout_is_the_fusions(fusion, private_latents, size):
    mcfg = ModelConfig(fusion=fusion, private_latents=private_latents, private_dim=8)
    assert mcfg.private_size() == fusions.get(fusion).private_size(mcfg) == size


def test_a_fusion_refuses_settings_it_cannot_run():
    cfg = Config.from_dict({'modalities': {'a': {'kind': 'taxels', 'topic': 'a',
                                                 'msg_type': 'x', 'rows': 2, 'cols': 2}},
                            'model': {'fusion': 'mmvae_plus', 'private_dim': 0}})
    with pytest.raises(ConfigError, match='private_dim must be >= 1 for mmvae_plus'):
        MultimodalVAE(cfg)


@pytest.mark.parametrize('name', fusions.names())
def test_posterior_is_a_mixture_and_the_model_uses_the_fusions_methods(name):
    torch.manual_seed(0)
    mus, lvs = torch.randn(3, 4, 5), torch.randn(3, 4, 5)
    mask = torch.tensor([[True, False, True, True]] * 2 + [[False, False, True, True]])
    mix = fusions.fuse(name, mus, lvs, mask)
    assert isinstance(mix, Mixture) and mix.mus.shape[1:] == (4, 5)
    mu, _ = mix.gaussian()
    assert torch.equal(mu[1], torch.zeros(5))  # no expert present: the prior
    cfg = Config.from_dict({'modalities': {n: {'kind': 'taxels', 'topic': n, 'msg_type': 'x',
                                               'rows': 2, 'cols': 2, 'window_s': 0.0}
                                           for n in ('a', 'b')},
                            'model': {'fusion': name, 'hidden': 16, 'latent_dim': 3}})
    model = MultimodalVAE(cfg)
    assert model.fusion == name and model.fusion_method is fusions.get(name)
    inputs = {n: torch.randn(6, 1, 2, 2) for n in ('a', 'b')}
    torch.manual_seed(1)
    loss, logs = model.loss(inputs, None, step=10)
    torch.manual_seed(1)
    again, _ = fusions.get(name).objective(model, *model.prepare(inputs, None), 10)
    assert torch.isfinite(loss) and torch.equal(loss, again)
    assert logs['loss'] == float(loss.detach())


@pytest.mark.parametrize('name', fusions.names())
def test_the_belief_measurement_is_the_posterior_without_a_prior_expert(name):
    """Three experts over D=2, batch 2; the second sample lacks expert 1."""
    mus = torch.tensor([[[1.0, -1.0], [0.5, 2.0]], [[3.0, 0.0], [9.0, 9.0]],
                        [[-1.0, 1.0], [1.5, 0.0]]])
    logvars = torch.log(torch.tensor([[[1.0, 0.5], [2.0, 1.0]], [[0.5, 2.0], [1.0, 1.0]],
                                      [[4.0, 1.0], [1.0, 3.0]]]))
    mask = torch.tensor([[True, True], [True, False], [True, True]])
    mu, logvar = fusions.get(name).measurement(mus, logvars, mask)
    if name == 'poe':  # the product of the present experts alone: no N(0, I) among them
        prec = torch.where(mask[..., None], torch.exp(-logvars), torch.zeros_like(mus)).sum(0)
        want = (torch.where(mask[..., None], mus * torch.exp(-logvars), 0 * mus).sum(0) / prec,
                -torch.log(prec))
        assert not torch.allclose(want[0], fusions.fuse(name, mus, logvars, mask).gaussian()[0])
    else:  # the mixtures have no prior expert: their own moment-matched posterior
        want = fusions.fuse(name, mus, logvars, mask).gaussian()
    torch.testing.assert_close(mu, want[0])
    torch.testing.assert_close(logvar, want[1])
