"""Synchronizer: the Pairing rules of docs/ARCHITECTURE.md."""
import dataclasses

import numpy as np
import pytest

from llmos_ros.config import Config, ModalityConfig, SyncConfig
from llmos_ros.core.sync import Synchronizer
from llmos_ros.errors import ConfigError
from llmos_ros.kinds.audio import AudioFrame
from llmos_ros.kinds.image import ImageFrame
from llmos_ros.kinds.taxels import TactileFrame

MS = 1_000_000


def cfg(**sync):
    mods = {
        'camera': ModalityConfig('camera', 'image', '/camera/image_raw', 'sensor_msgs/msg/Image',
                                 max_age_s=0.25),
        'audio': ModalityConfig('audio', 'audio', '/microphone/audio', 'llmos_ros/msg/AudioChunk',
                                sample_rate=1000, window_s=0.5, max_age_s=0.25),
        'tactile': ModalityConfig('tactile', 'taxels', '/tactile/array',
                                  'llmos_ros/msg/TactileArray', rows=1, cols=1, channels=1,
                                  window_s=0.0, max_age_s=0.25),  # newest frame
    }
    return Config(modalities=mods, sync=SyncConfig(**{'slop_s': 0.02, 'max_wait_s': 0.1, **sync}))


def img(t_ms):
    return ImageFrame(t_ms * MS, 'mono8', 1, 1, 1, False, np.zeros(1, np.uint8))


def chunk(t_ms, dur_ms=100):
    return AudioFrame(t_ms * MS, 1000, 1, np.zeros(dur_ms, np.float32))


def tax(t_ms):
    return TactileFrame(t_ms * MS, 1, 1, 1, np.zeros(1, np.float32))


def stream(duration_ms=2000, tactile_gap=None):
    """(name, frame) in stamp order: camera 10 Hz, audio 100 ms chunks, tactile 5 Hz at +10 ms."""
    items = []
    for t in range(0, duration_ms, 100):
        items.append(('camera', img(t)))
        items.append(('audio', chunk(t)))
        if t % 200 == 0 and not (tactile_gap and tactile_gap[0] <= t < tactile_gap[1]):
            items.append(('tactile', tax(t + 10)))
    items.sort(key=lambda x: x[1].stamp_ns)
    return items


def run(items, pop_every=True, sync=None):
    sync = sync or Synchronizer(cfg())
    out = []
    for name, frame in items:
        sync.push(name, frame)
        if pop_every:
            out += sync.pop_ready()
    return out + sync.pop_ready(flush=True), sync


def key(samples):
    return [(s.stamp_ns, sorted((k, [f.stamp_ns for f in v]) for k, v in s.windows.items()))
            for s in samples]


def test_causal_audio_window_and_nearest_image():
    samples, _ = run(stream(1500))
    assert [s.stamp_ns for s in samples] == [t * MS for t in range(0, 1500, 100)]
    s = samples[10]  # t = 1000 ms
    # audio: chunks overlapping [500, 1000) ms; the chunk starting at 1000 is not used
    assert [f.stamp_ns // MS for f in s.windows['audio']] == [500, 600, 700, 800, 900]
    assert s.stamps['audio'] == 900 * MS
    # tactile at 1010 is within slop of 1000
    assert s.windows['tactile'][0].stamp_ns == 1010 * MS
    # at 1100 the newest tactile <= 1120 is 1010
    assert samples[11].windows['tactile'][0].stamp_ns == 1010 * MS
    # the first sample has no audio before it
    assert set(samples[0].windows) == {'camera', 'tactile'}


def test_stale_modality_is_absent():
    samples, sync = run(stream(2000, tactile_gap=(600, 1400)))
    by_t = {s.stamp_ns // MS: s for s in samples}
    assert 'tactile' in by_t[600].windows  # 410 is 190 ms old: fresh enough
    assert 'tactile' not in by_t[700].windows  # 410 is 290 ms old: absent
    assert 'tactile' not in by_t[800].windows and 'tactile' not in by_t[1300].windows
    assert 'tactile' in by_t[1400].windows
    assert sync.absent['tactile'] >= 6


def test_late_modality_is_waited_for_up_to_max_wait():
    sync = Synchronizer(cfg())
    sync.push('audio', chunk(0))
    sync.push('tactile', tax(0))
    sync.push('camera', img(100))
    assert sync.pop_ready() == []  # audio ends at 100: covered; tactile not yet
    sync.push('audio', chunk(100))
    sync.push('audio', chunk(200))  # newest stamp 200 = t + max_wait: still waits
    assert sync.pop_ready() == []
    sync.push('tactile', tax(150))  # late tactile arrives: covers t, but 150 > t + slop
    (s,) = sync.pop_ready()
    assert s.windows['tactile'][0].stamp_ns == 0
    sync.push('camera', img(300))
    sync.push('audio', chunk(300))  # covers 300 for audio; tactile still at 150
    assert sync.pop_ready() == []
    sync.push('audio', chunk(400))  # newest 400 = t + 100 ms: not beyond max_wait
    assert sync.pop_ready() == []
    sync.push('audio', chunk(401, 1))  # newest stamp 401 > 400: emitted without waiting more
    (s,) = sync.pop_ready()
    assert s.stamp_ns == 300 * MS and s.windows['tactile'][0].stamp_ns == 150 * MS


def refused(result):
    """(modality, reason) of the pushed frame's own drop, None when it was accepted."""
    drop = result.refused
    assert result.accepted == (drop is None)
    return None if drop is None else (drop.modality, drop.reason)


def test_stamps_backwards_are_dropped():
    sync = Synchronizer(cfg())
    assert refused(sync.push('camera', img(100))) is None
    assert refused(sync.push('camera', img(50))) == ('camera', 'stamp_backwards')
    assert refused(sync.push('camera', img(100))) == ('camera', 'stamp_repeated')
    assert refused(sync.push('audio', chunk(0))) is None
    assert refused(sync.push('audio', chunk(-100))) == ('audio', 'stamp_backwards')
    assert refused(sync.push('nope', img(1))) == ('nope', 'unknown_modality')
    assert sync.drops == {'stamp_backwards': 2, 'stamp_repeated': 1, 'unknown_modality': 1}
    assert len(sync.pop_ready(flush=True)) == 1


def test_same_output_for_any_arrival_order_and_polling():
    items = stream(3000)
    ref, _ = run(items, pop_every=False)
    # arrival grouped per stream in bursts (each frame at most 60 ms late), polling in between
    delayed = []
    for i, (name, frame) in enumerate(items):
        late = {'camera': 60, 'audio': 0, 'tactile': 30}[name] if i % 3 else 0
        delayed.append((frame.stamp_ns + late * MS, i, name, frame))
    delayed.sort()
    got, sync = run([(n, f) for _, _, n, f in delayed], pop_every=True)
    assert key(got) == key(ref)
    assert not sync.drops
    per_stream, _ = run(sorted(items, key=lambda x: (x[1].stamp_ns // (50 * MS), x[0])))
    assert key(per_stream) == key(ref)


def test_memory_is_bounded():
    sync = Synchronizer(cfg(queue_size=8))
    for t in range(0, 100_000, 100):  # no camera: nothing is ever paired
        sync.push('audio', chunk(t))
        sync.push('tactile', tax(t))
    assert len(sync._hist['audio']) <= 8  # window 0.5 s + max_wait + margin
    assert len(sync._hist['tactile']) <= 8
    for t in range(100_000, 110_000, 100):  # camera only, no other input: bounded pending
        sync.push('camera', img(t))
    assert sync.pending <= 8


def test_audio_reference():
    c = cfg(reference='audio')
    samples, _ = run(stream(1000), sync=Synchronizer(c))
    # a sample at the end of each chunk
    assert [s.stamp_ns // MS for s in samples] == list(range(100, 1100, 100))
    assert [f.stamp_ns // MS for f in samples[5].windows['audio']] == [100, 200, 300, 400, 500]


# --- jumps: far-future stamps, steps back, loops (module doc of core/sync.py, jump_s = 2 s) ----
def test_one_far_future_reference_stamp_costs_that_frame_only():
    items = stream(2000)
    at = next(i for i, (n, f) in enumerate(items) if n == 'camera' and f.stamp_ns == 500 * MS)
    items.insert(at + 1, ('camera', img(2_000_000_000)))  # the year 2033
    samples, sync = run(items)
    assert sync.drops == {'stamp_jump': 1}
    assert [s.stamp_ns // MS for s in samples] == list(range(0, 2000, 100))
    assert all(set(s.windows) == {'camera', 'audio', 'tactile'} for s in samples[1:])


def test_far_future_or_zero_stamp_of_another_stream_is_dropped_and_spoils_nothing():
    items = stream(2000)
    at = next(i for i, (n, f) in enumerate(items) if f.stamp_ns == 810 * MS)
    items.insert(at + 1, ('tactile', tax(2_000_000_000)))
    items.insert(at + 2, ('audio', chunk(-5000)))
    ref, _ = run(stream(2000))
    samples, sync = run(items)
    assert sync.drops == {'off_timeline': 2}
    assert key(samples) == key(ref)


def test_looping_bag_re_anchors_after_one_frame():
    items = stream(1000) + stream(1000)  # the same 1 s played twice: stamps step back by 1 s
    sync = Synchronizer(cfg(jump_s=0.5))
    samples, sync = run(items, sync=sync)
    stamps = [s.stamp_ns // MS for s in samples]
    # second pass: its first camera frame (t = 0) is the jump, t = 100 re-anchors the time line
    assert stamps == list(range(0, 1000, 100)) + list(range(100, 1000, 100))
    assert sync.drops['stamp_jump'] == 1
    assert all('audio' in s.windows and 'tactile' in s.windows for s in samples[12:])


def test_clock_step_forward_by_hours_re_anchors():
    hour = 3_600_000
    later = [(n, dataclasses.replace(f, stamp_ns=f.stamp_ns + hour * MS))
             for n, f in stream(1000)]
    samples, sync = run(stream(1000) + later)
    stamps = [s.stamp_ns // MS for s in samples]
    assert stamps[:10] == list(range(0, 1000, 100))
    assert stamps[10:] == [hour + t for t in range(100, 1000, 100)]
    assert sync.drops['stamp_jump'] == 1
    assert all(set(s.windows) == {'camera', 'audio', 'tactile'} for s in samples[12:])


def test_jump_must_exceed_max_wait():
    with pytest.raises(ConfigError, match=r'sync.jump_s must be > 0 and > sync.max_wait_s'):
        Synchronizer(cfg(jump_s=0.05))


# --- typed drops (core/drops.py): every drop reported once, with the modality it costs ---------
def test_one_push_that_drops_several_samples_reports_each_with_its_modality():
    sync = Synchronizer(cfg(queue_size=3))
    for t in (0, 100, 200, 300, 400):  # nobody pops: three ready samples, two pending
        assert sync.push('camera', img(t)).drops == []
    for t in (0, 100, 200, 300, 400):
        assert sync.push('tactile', tax(t)).drops == []
    result = sync.push('audio', chunk(0, 1000))  # covers both pending samples at once
    assert result.accepted and result.refused is None
    # the two oldest ready samples are evicted: charged to the reference, not to the audio push
    assert [(d.modality, d.reason) for d in result.drops] == [('camera', 'queue_full')] * 2
    assert [d.detail for d in result.drops] == ['ready sample at 0 ns not taken',
                                                f'ready sample at {100 * MS} ns not taken']
    assert [s.stamp_ns // MS for s in sync.pop_ready()] == [200, 300, 400]
    assert sync.drops == {'queue_full': 2}


def test_buffered_frames_evicted_are_charged_to_their_modality():
    sync = Synchronizer(cfg(queue_size=2))
    drops = []
    for t in range(0, 1000, 10):  # taxels (newest frame mode) and no camera: capped at 2
        drops += sync.push('tactile', tax(t)).drops
    assert drops and {(d.modality, d.reason) for d in drops} == {('tactile', 'queue_full')}
    assert len(drops) == sync.drops['queue_full'] == 100 - 2


def test_validation_drop_is_typed_and_keeps_the_frame_out_of_pairing():
    from llmos_ros.core.pairing import Pairer
    from llmos_ros.core.preprocess import Preprocessor
    c = cfg()
    pairer = Pairer({n: Preprocessor(m) for n, m in c.modalities.items()}, Synchronizer(c))
    bad = dataclasses.replace(img(100), encoding='yuv422')
    result = pairer.push('camera', bad)
    assert not result.accepted and result.samples == []
    (drop,) = result.drops
    assert (drop.modality, drop.reason, drop.key) == ('camera', 'encoding', 'camera/encoding')
    assert 'yuv422' in drop.detail
    assert pairer.synchronizer.accepted['camera'] == 0  # never paired
    assert pairer.push('camera', img(100)).accepted  # the same stamp, valid: taken
    assert pairer.flush().samples[0].stamp_ns == 100 * MS


def test_drop_counter_counts_every_drop_from_two_threads():
    import threading

    from llmos_ros.core.drops import Drop, DropCounter
    counter = DropCounter()
    n = 20_000
    barrier = threading.Barrier(2)

    def count(drop):
        barrier.wait()
        for _ in range(n):
            counter.add([drop])

    threads = [threading.Thread(target=count, args=(Drop('camera', 'size'),)),
               threading.Thread(target=count, args=(Drop('', 'no_modality'),))]
    for th in threads:
        th.start()
    snapshots = []
    while any(th.is_alive() for th in threads):
        snapshots.append(counter.snapshot())
    for th in threads:
        th.join()
    assert counter.snapshot() == {'no_modality': n, 'camera/size': n}
    assert counter.total() == 2 * n and counter.reasons('camera') == {'size': n}
    assert all(0 <= v <= n for s in snapshots for v in s.values())


@pytest.mark.parametrize('kind', ['taxels', 'wrench'])
def test_a_windowed_reference_holds_its_own_frame(kind):
    """Only a windowed taxel (or wrench) stream: each window is (t - window_s, t], not empty."""
    from llmos_ros.core.preprocess import Preprocessor
    from llmos_ros.kinds.wrench import WrenchFrame
    mod = ModalityConfig('touch', kind, '/touch', 'x', rows=1, cols=1, channels=1,
                         window_s=0.05, grid_hz=100.0)
    sync = Synchronizer(Config(modalities={'touch': mod}, sync=SyncConfig(max_wait_s=0.1)))
    stamps = list(range(0, 300, 10))
    for t in stamps:
        values = np.full(1 if kind == 'taxels' else 6, t, np.float32)
        sync.push('touch', TactileFrame(t * MS, 1, 1, 1, values) if kind == 'taxels'
                  else WrenchFrame(t * MS, values))
    samples = sync.pop_ready(flush=True)
    assert [s.stamp_ns for s in samples] == [t * MS for t in stamps]
    prep = Preprocessor(mod)
    for s in samples:
        t = s.stamp_ns // MS
        assert [fr.stamp_ns // MS for fr in s.windows['touch']] == \
            [u for u in stamps if t - 50 < u <= t]
        assert s.window_end('touch') == s.stamp_ns + 1 and s.stamps['touch'] == s.stamp_ns
        grid = prep(s.windows['touch'], s.window_end('touch'))  # no 'empty' drop
        assert grid.shape[1] == 5 and grid[0, -1, 0] == t  # the newest step is its own frame
        if t >= 40:
            assert grid[0, :, 0].tolist() == [t - 40, t - 30, t - 20, t - 10, t]
