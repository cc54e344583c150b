"""
The faster moe / mmvae_plus objectives and prediction paths give the numbers of the first ones.

References: test/reference_objectives.py (the objectives as first written) and re-encoding every
leave-one-out input set through the model (the prediction path as first written).
"""
import pytest
import reference_objectives as ref
from test_models import make_batch, make_cfg
import torch

from llmos_ros.models import MultimodalVAE
from llmos_ros.models.objectives import DECODE_ROWS, OBJECTIVES

REFERENCE = {'moe': ref.mmvae_loss, 'mmvae_plus': ref.mmvae_plus_loss}
BATCH = 24  # more than DECODE_ROWS // BATCH (M * K) slices: the decoders run in several passes


def presence(kind: str, b: int) -> dict:
    """'complete': all present; 'partial': mic missing in some samples, tax in none, one empty."""
    if kind == 'complete':
        return {}
    gen = torch.Generator().manual_seed(7)
    mic = torch.rand(b, generator=gen) < 0.6
    cam = torch.ones(b, dtype=torch.bool)
    cam[0] = False
    mic[0] = False
    return {'mic': mic, 'cam': cam, 'tax': cam.clone()}


def loss_and_grads(model, fn, xs, mask, seed):
    torch.manual_seed(seed)
    model.zero_grad()
    loss, logs = fn(model, xs, mask, 5)
    loss.backward()
    grads = [torch.zeros_like(p) if p.grad is None else p.grad.clone()
             for p in model.parameters()]
    return loss.detach(), logs, grads


@pytest.mark.parametrize('fusion', sorted(REFERENCE))
@pytest.mark.parametrize('kind', ['complete', 'partial'])
def test_objective_equals_reference_value_and_gradients(fusion, kind):
    assert DECODE_ROWS // BATCH < 3 * 3  # the chunked path really runs in several passes
    torch.manual_seed(0)
    model = MultimodalVAE(make_cfg(fusion, three=True, k_samples=3, warmup_steps=10))
    xs, mask = model.prepare(make_batch(model, BATCH), presence(kind, BATCH))
    want, want_logs, want_grads = loss_and_grads(model, REFERENCE[fusion], xs, mask, seed=3)
    got, got_logs, got_grads = loss_and_grads(model, OBJECTIVES[fusion], xs, mask, seed=3)
    assert torch.isfinite(got)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    assert got_logs.keys() == want_logs.keys()
    for key in want_logs:
        assert got_logs[key] == pytest.approx(want_logs[key], rel=1e-5, abs=1e-4), key
    for g, w in zip(got_grads, want_grads):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5 * max(1.0, float(w.abs().max())))


@pytest.mark.parametrize('fusion', sorted(REFERENCE))
def test_objective_with_a_modality_absent_from_the_whole_batch(fusion):
    torch.manual_seed(0)
    model = MultimodalVAE(make_cfg(fusion, three=True))
    inputs = make_batch(model, 6)
    present = {'mic': torch.zeros(6, dtype=torch.bool)}
    xs, mask = model.prepare(inputs, present)
    want = loss_and_grads(model, REFERENCE[fusion], xs, mask, seed=1)
    got = loss_and_grads(model, OBJECTIVES[fusion], xs, mask, seed=1)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-4)
    mic = model.decoders['mic']
    assert all(p.grad is None or not p.grad.any() for p in mic.parameters())
