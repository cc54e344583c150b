"""build_samples on small generated bags: count, presence, labels, stats, splits, inference."""
import numpy as np
import pytest

from llmos_ros.config import Config
from llmos_ros.core.bags import BagWriter
from llmos_ros.core.dataset import (
    build_samples,
    fit_stats,
    infer_modalities,
    normalize,
    split_by_time,
)
from llmos_ros.core.preprocess import Preprocessor
from llmos_ros.core.sync import Synchronizer
from llmos_ros.errors import BagError
from llmos_ros.kinds.audio import AudioFrame
from llmos_ros.kinds.image import ImageFrame
from llmos_ros.kinds.taxels import TactileFrame

MS = 1_000_000
T0 = 1_700_000_000 * 1_000_000_000


def write_bag(path, storage='mcap', audio_gap=(1000, 1500), bad_frame_at=700):
    """2 s: camera 10 Hz mono8 80x40, audio 8 kHz 100 ms chunks (gap), taxels 5 Hz, labels."""
    rng = np.random.default_rng(0)
    with BagWriter(path, storage=storage) as w:
        w.write_label('episode/label', T0, 'a')
        w.write_label('/episode/label', T0 + 1200 * MS, 'b')
        for t in range(0, 2000, 100):
            stamp = T0 + t * MS
            pix = rng.integers(0, 256, 40 * 80, dtype=np.uint8)
            enc = 'yuv422' if t == bad_frame_at else 'mono8'
            w.write_frame('camera/image_raw',
                          ImageFrame(stamp, enc, 40, 80, 80, False, pix, 'camera'))
            if not audio_gap[0] <= t < audio_gap[1]:
                sig = np.sin(np.arange(800) * 0.3).astype(np.float32)
                w.write_frame('microphone/audio', AudioFrame(stamp, 8000, 1, sig, 'mic'))
            if t % 200 == 0:
                w.write_frame('tactile/array', TactileFrame(stamp + 5 * MS, 2, 3, 1,
                                                            np.full(6, t, np.float32)))
    return path


@pytest.fixture(scope='module')
def bag(tmp_path_factory):
    return write_bag(tmp_path_factory.mktemp('ds') / 'bag')


def test_infer_modalities(bag):
    mods = infer_modalities([bag])
    assert set(mods) == {'camera', 'audio', 'tactile'}
    cam = mods['camera']
    assert (cam.kind, cam.channels, cam.height, cam.width) == ('image', 1, 32, 64)
    assert cam.topic == '/camera/image_raw'
    assert (mods['audio'].kind, mods['audio'].sample_rate) == ('audio', 8000)
    t = mods['tactile']
    assert (t.kind, t.rows, t.cols, t.channels) == ('taxels', 2, 3, 1)


def test_build_samples_count_presence_labels(bag):
    mods = infer_modalities([bag])
    mods['audio'].window_s = 0.5
    cfg = Config(modalities=mods)
    table = build_samples([bag], cfg, progress=False)
    assert len(table) == 19  # one per usable camera frame
    assert table.arrays['camera'].shape == (19, 1, 32, 64)
    assert table.arrays['audio'].shape == (19,) + mods['audio'].shape()
    assert table.arrays['tactile'].dtype == np.float32
    t_ms = (table.stamps - T0) // MS
    # the frame with a bad encoding is dropped before pairing: no sample at 700 ms
    np.testing.assert_array_equal(t_ms, [t for t in range(0, 2000, 100) if t != 700])
    assert table.present['camera'].all()
    assert table.drops == {'camera/encoding': 1}
    # audio: none before the first frame; the gap [1000, 1500) makes 1300..1500 stale
    audio = dict(zip(t_ms.tolist(), table.present['audio'].tolist()))
    assert not audio[0] and audio[100] and audio[1200] and 700 not in audio
    assert not audio[1300] and not audio[1500] and audio[1600]
    # taxels at t+5 ms every 200 ms, window [t - 0.32 s, t) (causal): all but the first
    assert not table.present['tactile'][0] and table.present['tactile'][1:].all()
    # t = 300 ms: frames at 5 ms (value 0) and 205 ms (200) on the 10 ms grid from -20 ms
    window = table.arrays['tactile'][t_ms == 300][0, 0]  # (steps, taxels)
    np.testing.assert_array_equal(window[:22], 0.0)
    np.testing.assert_array_equal(window[22:], 200.0)
    assert table.labels.tolist() == ['a'] * 11 + ['b'] * 8  # 700 ms is gone
    assert table.modality_stamps['audio'][t_ms == 500][0] == T0 + 400 * MS


def test_same_path_as_live_and_stats(bag):
    cfg = Config(modalities=infer_modalities([bag]))
    raw = build_samples([bag], cfg, progress=False)
    train, val = split_by_time(raw, 0.25)
    assert len(train) == 14 and len(val) == 5  # 19 samples: one frame has a bad encoding
    assert train.stamps.max() < val.stamps.min()
    stats = fit_stats(train)
    assert set(stats) == {'camera', 'audio', 'tactile'}
    direct = build_samples([bag], cfg, stats=stats, progress=False)
    post = normalize(raw, stats)
    for name in cfg.modalities:
        np.testing.assert_array_equal(direct.arrays[name], post.arrays[name])
        np.testing.assert_array_equal(direct.present[name], post.present[name])
    # a live loop (pair() + Preprocessor on the frames) gives the same arrays
    from llmos_ros.core.bags import read_bag
    from llmos_ros.core.pairing import pair
    from llmos_ros.kinds import frame_from_msg
    sync = Synchronizer(cfg)
    by_topic = {m.topic: n for n, m in cfg.modalities.items()}
    preps = {n: Preprocessor(m, stats) for n, m in cfg.modalities.items()}
    samples, drops = [], []
    for topic, mtype, _, msg in read_bag(bag, list(by_topic)):
        name = by_topic[topic]
        result = pair(preps[name], sync, name, frame_from_msg(mtype, msg))
        samples += result.samples
        drops += result.drops
    samples += sync.pop_ready(flush=True)
    assert [(d.modality, d.reason) for d in drops] == [('camera', 'encoding')]
    assert 'yuv422' in drops[0].detail
    s = samples[5]
    np.testing.assert_array_equal(preps['audio'](s.windows['audio'], s.stamp_ns),
                                  direct.arrays['audio'][5])


def test_sqlite_and_several_bags(tmp_path):
    a = write_bag(tmp_path / 'a', storage='sqlite3')
    b = write_bag(tmp_path / 'b', audio_gap=(0, 0), bad_frame_at=-1)
    cfg = Config(modalities=infer_modalities([a, b]))
    table = build_samples([a, b], cfg, progress=False)
    assert len(table) == 39  # bag a has one frame with a bad encoding
    assert table.bag_index.tolist() == [0] * 19 + [1] * 20
    train, val = split_by_time(table, 0.1)
    assert len(val) == 4 and val.bag_index.tolist() == [0, 0, 1, 1]


def test_missing_topics_error(tmp_path):
    path = tmp_path / 'labels'
    with BagWriter(path) as w:
        w.write_label('episode/label', 0, 'x')
    with pytest.raises(BagError, match='no sensor topics'):
        infer_modalities([path])


def test_taxel_windows_are_identical_in_training_evaluation_and_live(tmp_path):
    """A 1 kHz taxel stream: dataset, llmos-eval's replay and the live engine give equal arrays."""
    import torch

    from llmos_ros.checkpoint import LoadedModel
    from llmos_ros.evaluation.replay import replay
    from llmos_ros.inference import PerceptionEngine
    from llmos_ros.models.mvae import MultimodalVAE

    rng = np.random.default_rng(1)
    path = tmp_path / 'tax'
    with BagWriter(path) as w:
        for t in range(0, 1500):  # taxels every ms (with 0-0.6 ms jitter), camera every 100 ms
            stamp = T0 + t * MS + int(rng.integers(0, 600_000))
            w.write_frame('tactile/array',
                          TactileFrame(stamp, 2, 2, 1, rng.normal(size=4).astype(np.float32)))
            if t % 100 == 50:
                pix = rng.integers(0, 256, 64, dtype=np.uint8)
                w.write_frame('camera/image_raw',
                              ImageFrame(T0 + t * MS, 'mono8', 8, 8, 8, False, pix, 'camera'))
    cfg = Config(modalities=infer_modalities([path]))
    tac = cfg.modalities['tactile']
    assert tac.window_s == 0.32 and tac.shape() == (1, 32, 4)
    table = build_samples([path], cfg, progress=False)
    stats = fit_stats(table)
    table = normalize(table, stats)
    torch.manual_seed(0)
    loaded = LoadedModel(MultimodalVAE(cfg), cfg, stats, 'test')
    evaluated = replay(path, PerceptionEngine(loaded), infer=True)
    live = []
    engine = PerceptionEngine(loaded)
    from llmos_ros.core.bags import read_bag
    from llmos_ros.kinds import frame_from_msg
    by_topic = {m.topic: n for n, m in cfg.modalities.items()}
    for topic, mtype, _, msg in read_bag(path, list(by_topic)):
        for sample in engine.push(by_topic[topic], frame_from_msg(mtype, msg)).samples:
            live.append(engine.infer(sample)[0].inputs['tactile'])
    live += [engine.infer(s)[0].inputs['tactile'] for s in engine.flush().samples]
    assert len(table) == len(evaluated) == len(live) == 15
    for i in range(3, 15):  # from the 4th frame on, a full window of ~320 frames
        np.testing.assert_array_equal(table.arrays['tactile'][i], evaluated.arrays['tactile'][i])
        np.testing.assert_array_equal(table.arrays['tactile'][i], live[i])
    # sample i is at 50 + 100 i ms: its window holds exactly the frames of [t - 320 ms, t)
    sync = Synchronizer(cfg)
    samples = []
    for topic, mtype, _, msg in read_bag(path, list(by_topic)):
        sync.push(by_topic[topic], frame_from_msg(mtype, msg))
        samples += sync.pop_ready()
    samples += sync.pop_ready(flush=True)
    s = samples[8]
    got = [f.stamp_ns for f in s.windows['tactile']]
    assert got and min(got) >= s.stamp_ns - 320 * MS and max(got) < s.stamp_ns
    assert len(got) in range(318, 323)
