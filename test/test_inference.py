"""The live engine's backends: onnxruntime gives eager torch's latents and predictions."""
import sys

import numpy as np
import pytest
from test_models import make_cfg
import torch

from llmos_ros.checkpoint import LoadedModel, load_checkpoint
from llmos_ros.config import Config
from llmos_ros.errors import ConfigError
from llmos_ros.evaluation.replay import replay
from llmos_ros.export import ExportError
from llmos_ros.inference import BACKENDS, PerceptionEngine
from llmos_ros.models import MultimodalVAE

ATOL = 1e-4


@pytest.fixture(scope='module')
def sim_checkpoint(sim_model):
    return load_checkpoint(sim_model[1])


def with_fusion(checkpoint, fusion: str) -> LoadedModel:
    """The trained mopoe checkpoint itself, else a fresh model of its config with `fusion`."""
    if fusion == checkpoint.cfg.model.fusion:
        return checkpoint
    cfg = Config.from_dict(checkpoint.cfg.to_dict())
    cfg.model.fusion = fusion
    torch.manual_seed(0)
    return LoadedModel(MultimodalVAE(cfg), cfg, checkpoint.stats, f'fresh-{fusion}')


def replayed(bag, engine, n=3) -> list:
    """The first `n` live results of `bag` through `engine`, each with its predictions."""
    results = []
    replay(bag, engine, max_samples=n, on_result=lambda r: (engine.predict(r), results.append(r)))
    assert len(results) == n
    return results


@pytest.mark.parametrize('fusion', ['mopoe', 'poe', 'moe', 'mmvae_plus'])
@pytest.mark.parametrize('inputs', [None, ['camera', 'tactile'], ['tactile']],
                         ids=['complete', 'no_audio', 'tactile_only'])
def test_onnxruntime_engine_equals_eager(sim_model, sim_checkpoint, fusion, inputs):
    bag = sim_model[0]
    loaded = with_fusion(sim_checkpoint, fusion)
    want = replayed(bag, PerceptionEngine(loaded, modalities=inputs))
    engine = PerceptionEngine(loaded, modalities=inputs, backend='onnxruntime')
    assert engine.backend == 'onnxruntime'
    got = replayed(bag, engine)
    for w, g in zip(want, got):
        assert g.stamp_ns == w.stamp_ns and g.modalities == w.modalities
        assert set(g.modalities) == set(inputs or engine.names)  # incomplete when asked
        np.testing.assert_allclose(g.mean, w.mean, rtol=0, atol=ATOL)
        np.testing.assert_allclose(g.std, w.std, rtol=0, atol=ATOL)
        for ge, we in zip(g.experts, w.experts):  # the tensors model.experts gives
            assert (ge is None) == (we is None)
            if we is not None:
                assert ge.shape == we.shape
                torch.testing.assert_close(ge, we, rtol=0, atol=ATOL)
        assert g.predictions.keys() == w.predictions.keys() and g.predictions
        for name, (array, source) in g.predictions.items():
            assert source == w.predictions[name][1]
            np.testing.assert_allclose(array, w.predictions[name][0], rtol=0, atol=ATOL)


def tiny() -> LoadedModel:
    torch.manual_seed(1)
    cfg = make_cfg('poe')
    return LoadedModel(MultimodalVAE(cfg), cfg, {}, 'tiny')


def test_unknown_backend_is_a_config_error():
    with pytest.raises(ConfigError, match="backend 'tensorrt' is not one of torch, onnxruntime"):
        PerceptionEngine(tiny(), backend='tensorrt')
    assert BACKENDS == ('torch', 'onnxruntime')


@pytest.mark.parametrize('device', ['cuda', 'cuda:1'])
def test_onnxruntime_with_a_cuda_device_is_a_config_error(device):
    with pytest.raises(ConfigError, match=f"backend 'onnxruntime' runs on the cpu only: "
                                          f"device '{device}' needs backend 'torch'"):
        PerceptionEngine(tiny(), device=device, backend='onnxruntime')


def test_onnxruntime_missing_is_a_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)  # `import onnxruntime` fails
    with pytest.raises(ConfigError, match='onnxruntime cannot be imported .*pip install '
                                          'onnxruntime, or use the torch backend'):
        PerceptionEngine(tiny(), backend='onnxruntime')
    assert PerceptionEngine(tiny()).backend == 'torch'  # the default needs no onnxruntime


def test_a_network_that_differs_from_eager_is_refused_by_name():
    loaded = tiny()
    with torch.no_grad():
        loaded.model.decoders['tax'].fc[0].bias[0] = float('nan')  # a broken checkpoint
    with pytest.raises(ExportError, match="decoder of 'tax': output mean differs from the "
                                          'eager model'):
        PerceptionEngine(loaded, backend='onnxruntime')


def test_onnxruntime_runs_the_networks_exported_at_start():
    """Changing the eager weights afterwards changes nothing: the sessions run, not torch."""
    from llmos_ros.inference import Inference
    loaded = tiny()
    engine = PerceptionEngine(loaded, backend='onnxruntime')
    arrays = {'cam': np.ones(engine.model.shapes['cam'], np.float32)}

    def run():
        result = Inference(0, ['cam'], {}, None, None, arrays)
        return engine.predict(result)['tax'][0], result.experts[0]

    prediction, experts = run()
    with torch.no_grad():
        for p in loaded.model.parameters():
            p.add_(1.0)
    again, experts_again = run()
    np.testing.assert_array_equal(again, prediction)
    torch.testing.assert_close(experts_again, experts, rtol=0, atol=0)
    eager = PerceptionEngine(loaded)  # the changed weights, in torch
    assert not np.allclose(eager.predict(Inference(0, ['cam'], {}, None, None, arrays))['tax'][0],
                           prediction, atol=ATOL)
