"""Tests of the deployment export (ONNX via onnxruntime, TorchScript) against the eager model."""
import pytest
import torch

from llmos_ros.config import Config
from llmos_ros.export import ExportError, check_export, export_model, run_exported
from llmos_ros.models import MultimodalVAE


def make_model(fusion):
    torch.manual_seed(0)
    cfg = Config.from_dict({'modalities': {
        'cam': {'kind': 'image', 'topic': '/cam', 'msg_type': 'sensor_msgs/msg/Image',
                'height': 8, 'width': 10},
        'tax': {'kind': 'taxels', 'topic': '/tax', 'msg_type': 'llmos_ros/msg/TactileArray',
                'rows': 2, 'cols': 3},
    }, 'model': {'fusion': fusion, 'latent_dim': 3, 'private_dim': 2, 'hidden': 16}})
    return MultimodalVAE(cfg)


def _inputs(model, b=3):
    inputs = {n: torch.randn((b,) + model.shapes[n]) for n in model.names}
    present = {'cam': torch.tensor([True, False, True]), 'tax': torch.tensor([False, True, True])}
    return inputs, present


@pytest.mark.parametrize('fusion', ['poe', 'moe', 'mopoe', 'mmvae_plus'])
def test_onnx_matches_eager(tmp_path, fusion):
    model = make_model(fusion)
    path = export_model(model, tmp_path / 'model.onnx')
    assert check_export(model, path) < 1e-4  # every presence pattern, export batch size
    inputs, present = _inputs(model)  # another batch size: the batch axis is dynamic
    assert check_export(model, path, inputs, present) < 1e-4
    out = run_exported(path, model, inputs, present)
    assert out[0].shape == (3, model.latent_size)
    # the deployed graph drops missing experts too: a missing input's values do not matter
    changed = {n: v.clone() for n, v in inputs.items()}
    changed['cam'][1] = 100.0
    out2 = run_exported(path, model, changed, present)
    assert all((a == b).all() for a, b in zip(out, out2))


def test_torchscript_matches_eager_and_mismatch_raises(tmp_path):
    model = make_model('mopoe')
    path = export_model(model, tmp_path / 'model.pt')
    assert check_export(model, path, *_inputs(model)) < 1e-5
    with torch.no_grad():
        model.decoders['tax'].fc[0].bias.add_(1.0)  # the eager model changes after export
    with pytest.raises(ExportError, match='pred_tax differs'):
        check_export(model, path, *_inputs(model))
