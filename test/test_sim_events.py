"""Injected events of llmos_ros.sim.make_bag: swap, freeze, silence (real bags)."""
import numpy as np
import pytest

from llmos_ros.core.bags import read_bag
from llmos_ros.errors import ConfigError
from llmos_ros.sim import make_bag
from llmos_ros.sim.make_bag import DEFAULT_START_NS, SWAP_SEED_OFFSET, Event
from llmos_ros.sim.scene import CAMERA_TOPIC, Scene, SceneConfig

NS = 1_000_000_000


def _frames(path):
    """Sensor topic -> {stamp: payload bytes}."""
    out = {}
    for topic, _, stamp, msg in read_bag(path):
        if topic == '/episode/label':
            continue
        payload = np.asarray(msg.data if topic == '/camera/image_raw' else
                             (msg.samples if topic == '/microphone/audio' else msg.values))
        out.setdefault(topic, {})[stamp] = payload.tobytes()
    return out


def test_events_change_only_their_stream_and_window(tmp_path):
    clean, events = tmp_path / 'clean', tmp_path / 'events'
    assert make_bag.main(['--out', str(clean), '--duration', '2', '--seed', '1', '--quiet']) == 0
    assert make_bag.main(['--out', str(events), '--duration', '2', '--seed', '1', '--quiet',
                          '--event', 'silence:tactile:0.5:0.5', '--event', 'freeze:camera:1:0.5',
                          '--event', 'swap:audio:0.5:1']) == 0
    a, b = _frames(clean), _frames(events)

    def inside(stamp, start, dur):
        return start <= (stamp - DEFAULT_START_NS) / NS < start + dur

    tactile = [s for s in a['/tactile/array'] if not inside(s, 0.5, 0.5)]
    assert sorted(b['/tactile/array']) == tactile  # silent: nothing in the window
    assert all(b['/tactile/array'][s] == a['/tactile/array'][s] for s in tactile)
    cam = b['/camera/image_raw']
    assert sorted(cam) == sorted(a['/camera/image_raw'])  # frozen: same stamps...
    frozen = [cam[s] for s in sorted(cam) if inside(s, 1.0, 0.5)]
    before = max(s for s in cam if (s - DEFAULT_START_NS) / NS < 1.0)
    assert len(frozen) > 10 and all(f == cam[before] for f in frozen)  # ...the last frame
    audio = b['/microphone/audio']
    assert sorted(audio) == sorted(a['/microphone/audio'])
    swapped = [s for s in audio if inside(s, 0.5, 1.0)]
    assert sum(audio[s] != a['/microphone/audio'][s] for s in swapped) > 0.9 * len(swapped)
    assert all(audio[s] == a['/microphone/audio'][s] for s in audio if s not in swapped)


def test_swap_source_shows_another_label(tmp_path):
    # Seed 51's episode 1 (4-8 s) is cylinder/metal, and so is the first source scene's
    # (seed 51 + SWAP_SEED_OFFSET): the swap takes the second source's frames there.
    own, first, second = (Scene(seed=51 + k * SWAP_SEED_OFFSET, start_ns=DEFAULT_START_NS)
                          for k in range(3))
    assert own.label(1) == first.label(1) != second.label(1)
    out = tmp_path / 'swap'
    assert make_bag.main(['--out', str(out), '--duration', '5', '--seed', '51', '--quiet',
                          '--set', 'image_width=32', '--set', 'image_height=32',
                          '--event', 'swap:camera:4:1']) == 0
    cam = _frames(out)['/camera/image_raw']
    small = Scene(SceneConfig.from_dict({'image_width': 32, 'image_height': 32}),
                  seed=51 + 2 * SWAP_SEED_OFFSET, start_ns=DEFAULT_START_NS)
    swapped = sorted(s for s in cam if (s - DEFAULT_START_NS) / NS >= 4.0)
    assert len(swapped) > 10
    first_index = round(4.0 * small.config.camera_rate_hz)
    for k, stamp in enumerate(swapped):
        expected = small.render(CAMERA_TOPIC, first_index + k).data
        assert cam[stamp] == np.asarray(expected).tobytes()


@pytest.mark.parametrize('text, match', [
    ('swap:tactile:3', 'expects KIND:MODALITY:START_S:DURATION_S'),
    ('blink:tactile:3:1', 'event kind must be one of'),
    ('swap:nose:3:1', 'event modality must be one of'),
    ('swap:audio:3:0', 'duration > 0 s')])
def test_bad_events_are_named(text, match):
    with pytest.raises(ConfigError, match=match):
        Event.parse(text)
