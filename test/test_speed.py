"""
The faster moe / mmvae_plus objectives and prediction paths give the numbers of the first ones.

References: test/reference_objectives.py (the objectives as first written) and re-encoding every
leave-one-out input set through the model (the prediction path as first written).
"""
import numpy as np
import pytest
import reference_objectives as ref
from test_models import make_batch, make_cfg
import torch

from llmos_ros.models import MultimodalVAE, fusions
from llmos_ros.models.objectives import DECODE_ROWS, diag_normal_log_prob, dreg

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


@pytest.mark.parametrize('k', [1, 3])
@pytest.mark.parametrize('fusion', sorted(REFERENCE))
@pytest.mark.parametrize('kind', ['complete', 'partial'])
def test_objective_equals_reference_value_and_gradients(fusion, kind, k):
    assert DECODE_ROWS // BATCH < 3 * k  # the chunked path really runs in several passes
    torch.manual_seed(0)
    model = MultimodalVAE(make_cfg(fusion, three=True, k_samples=k, warmup_steps=10))
    xs, mask = model.prepare(make_batch(model, BATCH), presence(kind, BATCH))
    want, want_logs, want_grads = loss_and_grads(model, REFERENCE[fusion], xs, mask, seed=3)
    objective = fusions.get(fusion).objective
    got, got_logs, got_grads = loss_and_grads(model, objective, xs, mask, seed=3)
    assert torch.isfinite(got)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    assert got_logs.keys() == want_logs.keys()
    for key in want_logs:
        assert got_logs[key] == pytest.approx(want_logs[key], rel=1e-5, abs=1e-4), key
    for g, w in zip(got_grads, want_grads):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5 * max(1.0, float(w.abs().max())))


def test_dreg_at_k1_is_the_stratified_elbo_with_its_path_gradient():
    """K=1 (no hooks): value and gradients of -mean over present components of lw."""
    gen = torch.Generator().manual_seed(0)
    mu = torch.randn(3, 1, 5, 4, generator=gen).requires_grad_()
    logvar = (0.3 * torch.randn(3, 1, 5, 4, generator=gen)).requires_grad_()
    eps = torch.randn(3, 1, 5, 4, generator=gen)
    target = torch.randn(5, 4, generator=gen)
    mask = torch.tensor([[1, 1, 0, 1, 0], [1, 0, 1, 1, 0], [0, 1, 1, 1, 0]], dtype=torch.bool)

    def latent_and_lw():
        z = mu + torch.exp(0.5 * logvar) * eps  # q parameters stopped in lw, as the objectives do
        lw = -((z - target) ** 2).sum(-1) - diag_normal_log_prob(z, mu.detach(), logvar.detach())
        return z, lw

    z, lw = latent_and_lw()
    got, logs = dreg(lw, [z], mask, {})
    got_grads = torch.autograd.grad(got, [mu, logvar])
    _, lw = latent_and_lw()
    present = torch.where(mask, lw[:, 0], torch.zeros_like(lw[:, 0]))
    per_sample = present.sum(0) / mask.sum(0).clamp_min(1)
    want = -per_sample[mask.any(0)].mean()
    want_grads = torch.autograd.grad(want, [mu, logvar])
    torch.testing.assert_close(got, want)
    assert logs['iwae_bound'] == pytest.approx(-want.item(), rel=1e-6)
    for g, w in zip(got_grads, want_grads):
        assert g.abs().sum() > 0
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize('fusion', sorted(REFERENCE))
def test_objective_with_a_modality_absent_from_the_whole_batch(fusion):
    torch.manual_seed(0)
    model = MultimodalVAE(make_cfg(fusion, three=True))
    inputs = make_batch(model, 6)
    present = {'mic': torch.zeros(6, dtype=torch.bool)}
    xs, mask = model.prepare(inputs, present)
    want = loss_and_grads(model, REFERENCE[fusion], xs, mask, seed=1)
    got = loss_and_grads(model, fusions.get(fusion).objective, xs, mask, seed=1)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-4)
    mic = model.decoders['mic']
    assert all(p.grad is None or not p.grad.any() for p in mic.parameters())


# ---- predictions from the experts of the state they belong to -------------------------------

def old_predictions(engine, result) -> dict:
    """The prediction path as first written: every leave-one-out input set encoded again."""
    rows, targets = [], []
    for target in engine.names:
        source = tuple(p for p in result.modalities if p != target)
        if source:
            rows.append(source)
            targets.append(target)
    inputs, masks = engine._batch(result.inputs, rows)
    with torch.no_grad():
        decoded = engine.model.decode(engine.model.encode(inputs, masks)[0])
    return {t: decoded[t][0][i].numpy() for i, t in enumerate(targets)}


def engine_for(fusion):
    from llmos_ros.checkpoint import LoadedModel
    from llmos_ros.inference import PerceptionEngine
    torch.manual_seed(1)
    cfg = make_cfg(fusion, three=True)
    return PerceptionEngine(LoadedModel(MultimodalVAE(cfg), cfg, {}, 'test'))


@pytest.mark.parametrize('fusion', ['poe', 'moe', 'mopoe', 'mmvae_plus'])
@pytest.mark.parametrize('present', [('cam', 'tax', 'mic'), ('cam', 'mic'), ('tax',)])
def test_predictions_fuse_the_stored_experts_like_reencoding(fusion, present):
    from llmos_ros.inference import Inference
    engine = engine_for(fusion)
    gen = torch.Generator().manual_seed(4)
    arrays = {n: torch.randn(engine.model.shapes[n], generator=gen).numpy() for n in present}
    result = Inference(0, [n for n in engine.names if n in present], {}, None, None, arrays)
    want = old_predictions(engine, result)
    got = engine.predict(result)
    assert result.experts is not None
    # a sole contributor is not predicted (nothing else to predict it from)
    assert sorted(got) == sorted(want) == sorted(
        n for n in engine.names if len(present) > 1 or n not in present)
    for name, (array, source) in got.items():
        assert name not in source
        np.testing.assert_allclose(array, want[name], rtol=1e-5, atol=1e-5)


def test_live_infer_keeps_the_experts_that_predict_reuses(sim_model):
    from llmos_ros.checkpoint import load_checkpoint
    from llmos_ros.evaluation.replay import replay
    from llmos_ros.inference import PerceptionEngine
    bag, model = sim_model
    engine = PerceptionEngine(load_checkpoint(model))
    results = []
    replay(bag, engine, max_samples=6, on_result=results.append)
    assert len(results) == 6
    for result in results:
        assert result.experts is not None
        want = old_predictions(engine, result)
        got = engine.predict(result)
        assert sorted(got) == sorted(want)
        for name, (array, _) in got.items():
            np.testing.assert_allclose(array, want[name], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('fusion', ['poe', 'moe', 'mopoe', 'mmvae_plus'])
def test_offline_subset_posteriors_from_row_experts_equal_reencoding(fusion):
    from llmos_ros.evaluation.metrics import subsets
    from llmos_ros.models.evaluate import encode_rows, row_experts, subset_metrics
    engine = engine_for(fusion)
    model = engine.model
    n = 11
    gen = torch.Generator().manual_seed(2)
    arrays = {m: torch.randn((n,) + model.shapes[m], generator=gen).numpy() for m in model.names}
    present = {m: (torch.rand(n, generator=gen) < 0.7).numpy() for m in model.names}
    present['cam'][:] = True
    experts = row_experts(model, arrays, 'cpu', batch_size=4)
    for given in subsets(model.names):
        rows = np.flatnonzero(np.all([present[m] for m in given], axis=0))
        want = subset_metrics(model, arrays, present, rows, given, 'cpu', 4, iwae_k=2)
        got = subset_metrics(model, arrays, present, rows, given, 'cpu', 4, iwae_k=2,
                             experts=experts)
        np.testing.assert_allclose(got['mu'], want['mu'], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got['neg_elbo'], want['neg_elbo'], rtol=1e-5)
        np.testing.assert_allclose(got['iwae_ll'], want['iwae_ll'], rtol=1e-5)
        for m in model.names:
            np.testing.assert_allclose(got['recon_mse'][m], want['recon_mse'][m], rtol=1e-5)
    rows = np.arange(n)
    np.testing.assert_allclose(
        encode_rows(model, arrays, rows, (), 'cpu', 4, present=present, experts=experts),
        encode_rows(model, arrays, rows, (), 'cpu', 4, present=present), rtol=1e-5, atol=1e-6)


def test_fit_rows_bounds_the_fit_sample_count_evenly_in_time():
    from llmos_ros.evaluation.scores import fit_rows
    rows = np.arange(3, 1003) * 2
    picked = fit_rows(rows, 10)
    assert picked.size == 10 and picked[0] == rows[0] and picked[-1] == rows[-1]
    assert np.all(np.diff(picked) > 0) and np.ptp(np.diff(picked)) <= 2
    np.testing.assert_array_equal(fit_rows(rows[:7], 10), rows[:7])



def test_upsample2x_equals_nearest_upsampling_values_and_gradients():
    from llmos_ros.models.networks import Upsample2x
    x = torch.randn(5, 3, 4, 7, generator=torch.Generator().manual_seed(0), requires_grad=True)
    want = torch.nn.Upsample(scale_factor=2, mode='nearest')(x)
    got = Upsample2x(3)(x)
    assert got.shape == (5, 3, 8, 14) and torch.equal(got, want)
    weight = torch.randn(want.shape, generator=torch.Generator().manual_seed(1))
    g_want, = torch.autograd.grad((want * weight).sum(), x)
    g_got, = torch.autograd.grad((got * weight).sum(), x)
    torch.testing.assert_close(g_got, g_want)


@pytest.mark.parametrize('stride', [1, 2])
def test_training_beliefs_from_row_experts_equal_the_live_path(sim_model, stride):
    """train_beliefs feeds the tracker the batched experts: the live replay's beliefs."""
    from pathlib import Path

    from llmos_ros.checkpoint import load_checkpoint
    from llmos_ros.evaluation.options import EvalOptions, Loaded
    from llmos_ros.evaluation.replay import replay
    from llmos_ros.evaluation.scores import tracker_for, train_beliefs
    from llmos_ros.inference import PerceptionEngine
    from llmos_ros.models.evaluate import row_experts
    bag, model = sim_model
    checkpoint = load_checkpoint(model)
    loaded = Loaded(Path('.'), checkpoint, torch.device('cpu'))
    opts = EvalOptions(bag=str(bag), model=str(model), out='.', train_bag=str(bag),
                       max_fit_samples=40, quiet=True)
    # the live path as first written: engine.infer one sample at a time, then the tracker
    engine = PerceptionEngine(checkpoint)
    tracker, want = tracker_for(opts, loaded, engine, quiet=True), []
    live = replay(bag, engine, max_samples=40,
                  on_result=lambda r: want.append(tracker.step(r).belief.mean))
    train = replay(bag, PerceptionEngine(checkpoint), infer=False, stride=stride)
    assert train.stride == stride and len(train) > 40
    got, labels = train_beliefs(opts, loaded, train,
                                row_experts(checkpoint.model, train.arrays, 'cpu'))
    assert got.shape == (40, checkpoint.model.latent_size)
    np.testing.assert_allclose(got, np.asarray(want), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(labels, live.labels)


def test_row_experts_in_cache_sized_passes_equal_one_pass(sim_model):
    """The encoders in passes of DECODE_ROWS rows give one pass's experts."""
    from llmos_ros.checkpoint import load_checkpoint
    from llmos_ros.models.evaluate import batch_rows, row_experts
    model = load_checkpoint(sim_model[1]).model
    n = 2 * DECODE_ROWS + 5
    gen = torch.Generator().manual_seed(5)
    arrays = {m: torch.randn((n,) + model.shapes[m], generator=gen).numpy() for m in model.names}
    with torch.no_grad():
        want = model.experts(*model.prepare(batch_rows(model, arrays, np.arange(n), model.names,
                                                       'cpu')[0], None))
    got = row_experts(model, arrays, 'cpu', batch_size=256)
    for g, w in zip(got, want):
        if w is None:
            assert g is None
        else:
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def _griffin_lim_as_first_written(spec, mod, n_iter, seed=0):
    """log_mel_to_waveform before it cached the inverse and overlap-added with bincount."""
    from llmos_ros.kinds.audio import LOG_FLOOR, _hann, mel_filterbank, stft_sizes
    _, hop, n_fft = stft_sizes(mod)
    fb = mel_filterbank(int(mod.sample_rate), n_fft, int(mod.n_mels))
    mel = np.maximum(np.exp(np.asarray(spec, np.float64).reshape(fb.shape[0], -1))
                     - LOG_FLOOR, 0.0)
    mag = np.sqrt(np.maximum(np.linalg.pinv(fb) @ mel, 0.0)).T
    frames = mag.shape[0]
    win = _hann(n_fft).astype(np.float64)
    length = (frames - 1) * hop + n_fft
    idx = (np.arange(frames) * hop)[:, None] + np.arange(n_fft)[None, :]
    norm = np.zeros(length)
    np.add.at(norm, idx, np.broadcast_to(win * win, idx.shape))
    norm = np.maximum(norm, 1e-8)
    phase = np.exp(2j * np.pi * np.random.default_rng(seed).random(mag.shape))
    for _ in range(max(1, n_iter)):
        y = np.zeros(length)
        np.add.at(y, idx, np.fft.irfft(mag * phase, n=n_fft, axis=1) * win)
        y /= norm
        phase = np.exp(1j * np.angle(np.fft.rfft(y[idx] * win, axis=1)))
    return y[n_fft - hop:].astype(np.float32)


@pytest.mark.parametrize('n_iter', [1, 16])
def test_griffin_lim_equals_the_algorithm_as_first_written(n_iter):
    """The audio prediction's waveform: cached inverse, bincount overlap-add, unit phasors."""
    from llmos_ros.config import ModalityConfig
    from llmos_ros.kinds.audio import AUDIO_CHUNK, log_mel, log_mel_to_waveform
    mod = ModalityConfig('mic', 'audio', '/mic', AUDIO_CHUNK, sample_rate=16000, window_s=0.5,
                         n_mels=32)
    t = np.arange(8000) / 16000.0
    wave = (0.5 * np.sin(2 * np.pi * (300 + 900 * t) * t)).astype(np.float32)
    wave[:2000] = 0.0  # silent bins: their phase stays 1 in both
    spec = log_mel(wave, mod)
    got = log_mel_to_waveform(spec, mod, n_iter=n_iter)
    want = _griffin_lim_as_first_written(spec, mod, n_iter)
    assert got.shape == want.shape and np.abs(want).max() > 0.1
    # float32 FFTs: the order of the sums differs by CPU; a wrong step would differ by O(max)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3 * np.abs(want).max())
