"""Tests of checkpoint save / load: round trip, atomic writes and clear mismatch errors."""
import copy

import numpy as np
import pytest
import torch

from llmos_ros import checkpoint as ckpt_mod
from llmos_ros.checkpoint import FORMAT_VERSION, load_checkpoint, model_id_of, save_checkpoint
from llmos_ros.config import Config
from llmos_ros.errors import CheckpointError
from llmos_ros.models import MultimodalVAE


def make_cfg(fusion='mmvae_plus', **model):
    m = {'fusion': fusion, 'latent_dim': 3, 'private_dim': 2, 'hidden': 16}
    m.update(model)
    return Config.from_dict({'modalities': {
        'cam': {'kind': 'image', 'topic': '/cam', 'msg_type': 'sensor_msgs/msg/Image',
                'height': 8, 'width': 8},
        'tax': {'kind': 'taxels', 'topic': '/tax', 'msg_type': 'llmos_ros/msg/TactileArray',
                'rows': 2, 'cols': 3},
    }, 'model': m})


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    cfg = make_cfg()
    model = MultimodalVAE(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss, _ = model.loss({n: torch.randn((2,) + model.shapes[n]) for n in model.names}, None, 1)
    loss.backward()
    opt.step()
    stats = {'cam': {'mean': np.float32(0.5), 'std': 2.0},
             'tax': {'mean': np.arange(3.0), 'std': [1.0, 2.0, 3.0]}}
    path = tmp_path / 'ck' / 'model.pt'
    mid = save_checkpoint(path, model, cfg, stats, {'step': 7, 'optimizer': opt.state_dict()})
    return path, model, cfg, mid


def test_round_trip_gives_identical_outputs(saved):
    path, model, cfg, mid = saved
    assert [p.name for p in path.parent.iterdir()] == ['model.pt']  # no temporary file left
    loaded = load_checkpoint(path)
    assert loaded.model_id == mid and len(mid) == 16
    assert loaded.cfg.to_dict() == cfg.to_dict()
    assert loaded.stats['tax']['mean'] == [0.0, 1.0, 2.0] and loaded.stats['cam']['std'] == 2.0
    assert loaded.extra['step'] == 7
    opt = torch.optim.Adam(loaded.model.parameters(), lr=1e-3)
    opt.load_state_dict(loaded.extra['optimizer'])  # resumable
    inputs = {n: torch.randn((3,) + model.shapes[n]) for n in model.names}
    present = {'cam': torch.tensor([True, False, True]), 'tax': torch.tensor([True, True, False])}
    model.eval()
    with torch.no_grad():
        a, b = model.encode(inputs, present), loaded.model.encode(inputs, present)
        pa, pb = model.predict(inputs, present), loaded.model.predict(inputs, present)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert all(torch.equal(pa[n], pb[n]) for n in model.names)
    # weights_only-compatible contents, input specs stored
    raw = torch.load(path, weights_only=True)
    assert raw['format_version'] == FORMAT_VERSION
    assert raw['inputs'][0] == {'name': 'cam', 'kind': 'image', 'topic': '/cam',
                                'msg_type': 'sensor_msgs/msg/Image', 'shape': [1, 8, 8]}
    # saving again overwrites atomically and gives the same id
    assert save_checkpoint(path, loaded.model, cfg, {}) == mid


def test_given_config_with_other_topic_is_accepted(saved):
    path, _, cfg, _ = saved
    other = copy.deepcopy(cfg)
    other.modalities['cam'].topic = '/robot/cam'
    other.train.lr = 0.5
    loaded = load_checkpoint(path, other)
    assert loaded.cfg is other


@pytest.mark.parametrize('change, field', [
    (lambda c: c.modalities.pop('tax'), 'modalities'),
    (lambda c: setattr(c.modalities['cam'], 'height', 16), 'modalities.cam.shape'),
    (lambda c: setattr(c.modalities['tax'], 'kind', 'image'), 'modalities.tax.kind'),
    (lambda c: setattr(c.model, 'fusion', 'moe'), 'model.fusion'),
    (lambda c: setattr(c.model, 'latent_dim', 4), 'model.latent_dim'),
    (lambda c: setattr(c.model, 'private_dim', 5), 'model.private_dim'),
    (lambda c: setattr(c.model, 'hidden', 32), 'model.hidden'),
])
def test_config_mismatch_names_the_field(saved, change, field):
    path, _, cfg, _ = saved
    other = copy.deepcopy(cfg)
    change(other)
    with pytest.raises(CheckpointError, match=f'{field} is .* in the checkpoint but'):
        load_checkpoint(path, other)


def test_missing_corrupt_and_foreign_files(tmp_path, saved):
    path = saved[0]
    with pytest.raises(CheckpointError, match='not found'):
        load_checkpoint(tmp_path / 'nope.pt')
    junk = tmp_path / 'junk.pt'
    junk.write_bytes(b'not a zip at all')
    with pytest.raises(CheckpointError, match='not a readable'):
        load_checkpoint(junk)
    truncated = tmp_path / 'trunc.pt'
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match='not a readable'):
        load_checkpoint(truncated)
    foreign = tmp_path / 'foreign.pt'
    torch.save({'state_dict': {}}, foreign)
    with pytest.raises(CheckpointError, match='not a llmos_ros checkpoint'):
        load_checkpoint(foreign)


def _rewrite(path, edit):
    raw = torch.load(path, weights_only=True)
    edit(raw)
    torch.save(raw, path)


def test_wrong_format_version(saved):
    path = saved[0]
    _rewrite(path, lambda r: r.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(CheckpointError, match=f'format_version {FORMAT_VERSION + 1}'):
        load_checkpoint(path)


def test_edited_weights_break_the_model_id(saved):
    path = saved[0]
    _rewrite(path, lambda r: r['state_dict']['decoders.cam.raw_log_scale'].add_(1.0))
    with pytest.raises(CheckpointError, match='model_id'):
        load_checkpoint(path)


@pytest.mark.parametrize('edit, what', [
    (lambda s: s.pop('decoders.tax.raw_log_scale'), 'missing weights'),
    (lambda s: s.update(extra_layer=torch.zeros(2)), 'unexpected weights'),
    (lambda s: s.update({'encoders.cam.head.bias': torch.zeros(3)}), 'has shape'),
])
def test_weights_that_do_not_fit_the_code(saved, edit, what):
    path = saved[0]

    def change(raw):
        edit(raw['state_dict'])
        raw['model_id'] = model_id_of(raw['state_dict'], raw['config'])
    _rewrite(path, change)
    with pytest.raises(CheckpointError, match=f'weights do not fit.*{what}'):
        load_checkpoint(path)


def test_failed_write_leaves_old_file(saved, monkeypatch):
    path, model, cfg, mid = saved

    def boom(*args, **kwargs):
        raise OSError('disk full')
    monkeypatch.setattr(ckpt_mod.torch, 'save', boom)
    with pytest.raises(OSError):
        save_checkpoint(path, model, cfg, {})
    monkeypatch.undo()
    assert [p.name for p in path.parent.iterdir()] == ['model.pt']
    assert load_checkpoint(path).model_id == mid


def _as_written_before_the_keys(tmp_path, cfg):
    """A checkpoint as the code before private_latents / grid_hz wrote it (same model_id rule)."""
    torch.manual_seed(0)
    model = MultimodalVAE(cfg)
    config = copy.deepcopy(cfg.to_dict())
    del config['model']['private_latents']
    del config['model']['k_samples']
    del config['model']['balance_likelihoods']
    for mod in config['modalities'].values():
        del mod['grid_hz']
        del mod['likelihood']
        if mod['kind'] == 'taxels':
            mod['window_s'] = 1.0  # the old unused default of every modality
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    path = tmp_path / 'old.pt'
    torch.save({'format': ckpt_mod.FORMAT, 'format_version': FORMAT_VERSION,
                'model_id': model_id_of(state, config), 'config': config, 'state_dict': state,
                'stats': {}, 'inputs': [], 'extra': {}}, path)
    return path, model


def test_checkpoints_older_than_the_new_keys_load_with_their_old_meaning(tmp_path):
    old_cfg = make_cfg('mopoe', private_latents=False)
    old_cfg.modalities['tax'].window_s = 0.0
    path, model = _as_written_before_the_keys(tmp_path, old_cfg)
    loaded = load_checkpoint(path)
    assert loaded.cfg.model.private_latents is False and loaded.model.private_dim == 0
    assert loaded.cfg.model.k_samples == 4  # the default when it was written (now 1)
    assert loaded.cfg.model.balance_likelihoods is False  # unweighted, as it was trained
    assert loaded.model.likelihood_scale == {'cam': 1.0, 'tax': 1.0}
    assert loaded.cfg.modalities['tax'].window_s == 0.0
    assert loaded.model.shapes['tax'] == (1, 2, 3)
    x = {n: torch.randn((2,) + model.shapes[n]) for n in model.names}
    assert torch.equal(loaded.model.encode(x)[0], model.eval().encode(x)[0])


def test_a_checkpoint_older_than_the_likelihood_key_keeps_the_gaussian(tmp_path):
    cfg = Config.from_dict({'modalities': {
        'cam': {'kind': 'image', 'topic': '/cam', 'msg_type': 'sensor_msgs/msg/Image',
                'height': 8, 'width': 8},
        'mic': {'kind': 'audio', 'topic': '/mic', 'msg_type': 'llmos_ros/msg/AudioChunk',
                'n_mels': 4, 'window_s': 0.1, 'hop_s': 0.025, 'sample_rate': 8000}},
        'model': {'latent_dim': 3, 'private_dim': 2, 'hidden': 16}})
    assert cfg.modalities['mic'].likelihood == 'time_shift'  # today's defaults
    assert cfg.modalities['cam'].likelihood == 'space_shift'
    model = MultimodalVAE(cfg)
    path = tmp_path / 'new.pt'
    save_checkpoint(path, model, cfg, {})
    assert load_checkpoint(path).model.shift_reach == {'mic': (None,), 'cam': (1, 1)}
    config = copy.deepcopy(cfg.to_dict())
    for mod in config['modalities'].values():
        del mod['likelihood']
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    old = tmp_path / 'old.pt'
    torch.save({'format': ckpt_mod.FORMAT, 'format_version': FORMAT_VERSION,
                'model_id': model_id_of(state, config), 'config': config, 'state_dict': state,
                'stats': {}, 'inputs': [], 'extra': {}}, old)
    loaded = load_checkpoint(old)
    assert loaded.cfg.modalities['mic'].likelihood == 'gaussian'  # as it was trained
    assert loaded.cfg.modalities['cam'].likelihood == 'gaussian'
    assert loaded.model.shift_reach == {}


def test_a_checkpoint_keeps_its_own_k_samples(tmp_path):
    assert Config().model.k_samples == 1
    for k in (1, 4):
        cfg = make_cfg('moe', k_samples=k)
        path = tmp_path / f'k{k}.pt'
        save_checkpoint(path, MultimodalVAE(cfg), cfg, {})
        assert load_checkpoint(path).cfg.model.k_samples == k


def test_a_config_asking_for_the_new_behaviour_of_an_old_checkpoint_names_the_key(tmp_path):
    old_cfg = make_cfg('mopoe', private_latents=False)
    old_cfg.modalities['tax'].window_s = 0.0
    path, _ = _as_written_before_the_keys(tmp_path, old_cfg)
    new_private = make_cfg('mopoe')
    new_private.modalities['tax'].window_s = 0.0
    with pytest.raises(CheckpointError, match='model.private_latents is False in the checkpoint'):
        load_checkpoint(path, new_private)
    new_tax = make_cfg('mopoe', private_latents=False)  # taxel window 0.32 s by default
    with pytest.raises(CheckpointError, match=r'modalities.tax.shape is \(1, 2, 3\)'):
        load_checkpoint(path, new_tax)


def test_written_readable_by_other_accounts(tmp_path, saved):
    import os
    import stat
    old = os.umask(0o022)
    try:
        path, model, cfg, _ = saved
        save_checkpoint(path, model, cfg, {})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


class _Payload:
    """Unpickling this runs code: what a tampered checkpoint would carry."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def test_pickled_payload_is_never_executed(tmp_path, saved):
    raw = torch.load(saved[0], weights_only=True)
    marker = tmp_path / 'payload_ran'
    raw['extra'] = {'evil': _Payload(marker)}
    tampered = tmp_path / 'tampered.pt'
    torch.save(raw, tampered)
    with pytest.raises(CheckpointError, match='never loaded: Unsupported global'):
        load_checkpoint(tampered)
    assert not marker.exists()


def test_newer_format_version_says_to_update(saved):
    path = saved[0]
    _rewrite(path, lambda r: r.update(format_version=FORMAT_VERSION + 5))
    with pytest.raises(CheckpointError, match='newer than this code reads.*update llmos_ros'):
        load_checkpoint(path)
