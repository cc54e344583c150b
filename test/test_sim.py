"""The simulated sensor source: scene consistency, bags of it, and the live node over real DDS."""
from collections import Counter
from pathlib import Path
import signal
import subprocess
import time

from helpers import ROOT, python_cmd, python_env, spin_until
import numpy as np
import pytest

from llmos_ros.errors import ConfigError
from llmos_ros.sim.scene import (
    AUDIO_TOPIC,
    CAMERA_TOPIC,
    LABEL_TOPIC,
    LABELS,
    MATERIALS,
    TACTILE_TOPIC,
    Scene,
    SceneConfig,
)

START_NS = 1_000_000_000_000


def _payload(item):
    return item.encode() if isinstance(item, str) else (
        item.data if hasattr(item, 'data') else
        item.samples if hasattr(item, 'samples') else item.values).tobytes()


@pytest.fixture(scope='module')
def events():
    return list(Scene(seed=3, start_ns=START_NS).events(24.0))


def test_same_seed_same_bytes_and_any_render_order():
    a = list(Scene(seed=7).events(3.0))
    b = list(Scene(seed=7).events(3.0))
    assert [(s, t, _payload(x)) for s, t, x in a] == [(s, t, _payload(x)) for s, t, x in b]
    c = list(Scene(seed=8).events(3.0))
    assert [_payload(x) for _, t, x in a if t == CAMERA_TOPIC] != \
        [_payload(x) for _, t, x in c if t == CAMERA_TOPIC]
    # Frames are computed on their own: rendering one out of order gives the same bytes.
    fresh = Scene(seed=7)
    frame = fresh.render(TACTILE_TOPIC, 150)
    assert _payload(frame) == _payload([x for _, t, x in a if t == TACTILE_TOPIC][150])
    assert _payload(fresh.render(AUDIO_TOPIC, 3)) == \
        _payload([x for _, t, x in a if t == AUDIO_TOPIC][3])


def test_rates_counts_ordering_and_jitter(events):
    cfg = SceneConfig()
    counts = Counter(t for _, t, _ in events)
    assert counts == {CAMERA_TOPIC: 720, TACTILE_TOPIC: 2400, AUDIO_TOPIC: 1200, LABEL_TOPIC: 6}
    stamps = [s for s, _, _ in events]
    assert stamps == sorted(stamps) and stamps[0] == START_NS and events[0][1] == LABEL_TOPIC
    for topic, rate, jitter in ((CAMERA_TOPIC, cfg.camera_rate_hz, cfg.camera_jitter_s),
                                (TACTILE_TOPIC, cfg.tactile_rate_hz, cfg.tactile_jitter_s)):
        st = np.array([s for s, t, _ in events if t == topic], np.int64) - START_NS
        offsets = st * 1e-9 - np.arange(st.size) / rate
        assert offsets.min() >= -1e-9 and offsets.max() < jitter
        assert offsets.std() > jitter / 10  # there is jitter, a few ms
        assert np.all(np.diff(st) > 0)
    audio = [x for _, t, x in events if t == AUDIO_TOPIC]
    assert all(f.sample_rate == 16000 and f.channels == 1 and f.n_frames == 320 for f in audio)
    assert all(a.end_ns == b.stamp_ns for a, b in zip(audio, audio[1:]))  # contiguous
    assert all(np.abs(f.samples).max() <= 1.0 for f in audio)
    images = [x for _, t, x in events if t == CAMERA_TOPIC]
    assert {(f.encoding, f.height, f.width, f.step, f.data.size) for f in images} == \
        {('rgb8', 32, 32, 96, 32 * 32 * 3)}
    taxels = [x for _, t, x in events if t == TACTILE_TOPIC]
    assert {(f.rows, f.cols, f.channels, f.values.size) for f in taxels} == {(8, 8, 1, 64)}


def test_arrival_order_hands_audio_over_after_its_last_sample():
    scene = Scene(seed=2)
    by_stamp = list(scene.schedule(5.0))
    by_arrival = list(scene.schedule(5.0, by_arrival=True))
    assert sorted(by_stamp) == sorted(by_arrival) and by_stamp != by_arrival
    due = [scene.available_ns(t, i) for _, t, i in by_arrival]
    assert due == sorted(due)
    assert all(scene.available_ns(t, i) == s + 20_000_000
               for s, t, i in by_arrival if t == AUDIO_TOPIC)


def test_labels_follow_the_hidden_state(events):
    scene = Scene(seed=3, start_ns=START_NS)
    labels = [(s, x) for s, t, x in events if t == LABEL_TOPIC]
    assert [s - START_NS for s, _ in labels] == [k * 4_000_000_000 for k in range(6)]
    for k, (_, text) in enumerate(labels):
        assert text in LABELS
        assert scene.state_at(k * 4.0 + 2.0).label == text
    all_labels = {x for s in range(12) for _, t, x in Scene(seed=s).events(20.0, [LABEL_TOPIC])}
    assert len(all_labels) >= 8 and all_labels <= set(LABELS)


def test_audio_energy_comes_from_touches(events):
    scene = Scene(seed=3, start_ns=START_NS)
    touches = [tc for k in range(6) for tc in scene.episode(k).touches]
    touching, quiet = [], []
    for _, t, f in events:
        if t != AUDIO_TOPIC:
            continue
        a, b = (f.stamp_ns - START_NS) * 1e-9, (f.end_ns - START_NS) * 1e-9
        rms = float(np.sqrt(np.mean(f.samples.astype(np.float64) ** 2)))
        if any(tc.t_on <= a and b <= tc.t_off for tc in touches):
            touching.append(rms)
        elif all(b < tc.t_on or a > tc.t_off + 0.6 for tc in touches):
            quiet.append(rms)
    assert len(touching) > 100 and len(quiet) > 10
    assert np.mean(touching) > 8 * np.mean(quiet)
    assert max(quiet) < 0.01


def test_a_scene_without_touches_is_steady_within_each_episode():
    touched = Scene(seed=3, start_ns=START_NS)
    steady = Scene(SceneConfig(touches=False), seed=3, start_ns=START_NS)
    assert [steady.label(k) for k in range(6)] == [touched.label(k) for k in range(6)]
    assert not any(steady.episode(k).touches for k in range(6))
    states = {(s.episode, s.x, s.y, s.touching, s.force)
              for s in (steady.state_at(t) for t in np.arange(0.0, 8.0, 0.01))}
    assert states == {(0, 0.0, 0.0, False, 0.0), (1, 0.0, 0.0, False, 0.0)}
    audio_rms, taxel_max, images = [], [], []
    for _, topic, f in steady.events(3.9):
        if topic == AUDIO_TOPIC:
            audio_rms.append(float(np.sqrt(np.mean(f.samples.astype(np.float64) ** 2))))
        elif topic == TACTILE_TOPIC:
            taxel_max.append(float(np.abs(f.values).max()))
        elif topic == CAMERA_TOPIC:
            images.append(f.data.astype(np.float64))
    assert max(audio_rms) < 0.005  # background noise only (0.002 std)
    assert max(taxel_max) < 0.05  # taxel noise only (0.005 std), no pressure blob
    frames = np.stack(images)
    assert np.abs(frames - frames.mean(0)).std() < 5.0  # the same image up to pixel noise (3)


def test_audio_pitch_depends_on_material():
    centroids = {m: [] for m in MATERIALS}
    for seed in range(6):
        scene = Scene(seed=seed)
        for k in range(3):
            ep = scene.episode(k)
            onset = ep.touches[0].t_on
            i = int(onset / 0.02)
            x = np.concatenate([scene.audio_chunk(j).samples for j in range(i, i + 4)])
            spec = np.abs(np.fft.rfft(x))
            freqs = np.fft.rfftfreq(x.size, 1 / 16000)
            centroids[ep.material].append(float((spec * freqs).sum() / spec.sum()))
    mean = {m: np.mean(v) for m, v in centroids.items()}
    assert mean['metal'] > mean['wood'] > mean['rubber']


def test_taxel_peak_tracks_the_contact_position(events):
    scene = Scene(seed=3, start_ns=START_NS)
    checked = 0
    for _, t, f in events:
        if t != TACTILE_TOPIC:
            continue
        state = scene.state_at((f.stamp_ns - START_NS) * 1e-9)
        grid = f.values.reshape(8, 8)
        if not state.touching:
            assert grid.max() < 0.05
            continue
        if state.force < 0.3:
            continue
        r, c = np.unravel_index(np.argmax(grid), grid.shape)
        # Taxel centres cover object coordinates [-1, 1]: 0.25 per taxel.
        assert abs((c + 0.5) / 4 - 1 - state.x) <= 0.3
        assert abs((r + 0.5) / 4 - 1 - state.y) <= 0.3
        # The peak taxel may sit off the blob's centre; it never exceeds the force.
        assert 0.25 * state.force < grid.max() < 1.1 * state.force + 0.03
        checked += 1
    assert checked > 300


def test_camera_shows_material_colour_and_the_fingertip():
    by_material = {m: [] for m in MATERIALS}
    for seed in range(6):
        scene = Scene(SceneConfig(image_noise=0.0), seed=seed)
        for k in range(3):
            ep = scene.episode(k)
            img = scene.camera_frame(int(k * 4.0 * 30)).data.reshape(32, 32, 3).astype(float)
            by_material[ep.material].append(img[14:18, 14:18].reshape(-1, 3).mean(axis=0))
    means = {m: np.mean(v, axis=0) for m, v in by_material.items() if v}
    assert len(means) == 3
    for a in MATERIALS:
        for b in MATERIALS:
            if a < b:
                assert np.abs(means[a] - means[b]).sum() > 60, (a, b, means)
    # The fingertip marker sits at the contact position and is bigger under a larger force.
    scene = Scene(SceneConfig(image_noise=0.0, image_height=64, image_width=64), seed=3)
    sizes = []
    for i in range(0, 24 * 30, 3):
        f = scene.camera_frame(i)
        state = scene.state_at(f.stamp_ns * 1e-9)
        if not state.touching or state.force < 0.2:
            continue
        img = f.data.reshape(64, 64, 3).astype(int)
        col = int((state.x / 1.25 + 1) / 2 * 64)
        row = int((state.y / 1.25 + 1) / 2 * 64)
        assert img[row, col, 0] > 150 and img[row, col, 0] > img[row, col, 2] + 30
        base = scene._base_image(state.episode)
        marker = np.abs(img - base).sum(axis=-1) > 40
        sizes.append((state.force, int(marker.sum())))
    forces, areas = np.array(sizes).T
    assert len(sizes) > 50 and np.corrcoef(forces, areas)[0, 1] > 0.5


def test_three_axis_taxels_carry_shear_while_sliding():
    scene = Scene(SceneConfig(channels=3), seed=1)
    shear = []
    for i in range(0, 2000):
        f = scene.tactile_frame(i)
        state = scene.state_at(f.stamp_ns * 1e-9)
        v = f.values.reshape(8, 8, 3)
        if state.touching and state.speed > 0.5 and state.force > 0.3:
            shear.append(np.abs(v[..., 1:]).max())
    assert len(shear) > 20 and np.median(shear) > 0.05


def test_config_validation():
    with pytest.raises(ConfigError, match='camera_jitter_s'):
        SceneConfig(camera_jitter_s=0.05)
    with pytest.raises(ConfigError, match='rows'):
        SceneConfig(rows=0)
    with pytest.raises(ConfigError, match='unknown settings'):
        SceneConfig.from_dict({'colour': 'red'})
    cfg = SceneConfig.from_dict({'image_width': '48', 'camera_rate_hz': 15})
    assert cfg.image_width == 48 and cfg.camera_rate_hz == 15.0
    assert SceneConfig.from_dict({'touches': 'false'}).touches is False
    assert SceneConfig.from_dict({'touches': True}).touches is True
    with pytest.raises(ConfigError, match=r"touches='maybe' is not a bool \(true or false\)"):
        SceneConfig.from_dict({'touches': 'maybe'})
    assert SceneConfig(chunk_s=0.0101).chunk_samples == 162


# -- bags ------------------------------------------------------------------------------------


def _read_bag(path):
    """Read a bag with rosbags directly (independent of core/bags.py)."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore
    store = get_typestore(Stores.ROS2_HUMBLE)
    types = {}
    for name in ('AudioChunk', 'TactileArray'):
        text = (ROOT / 'msg' / f'{name}.msg').read_text()
        types.update(get_types_from_msg(text, f'llmos_ros/msg/{name}'))
    store.register(types)
    with AnyReader([Path(path)], default_typestore=store) as reader:
        for conn, stamp, raw in reader.messages():
            yield conn.topic, conn.msgtype, stamp, reader.deserialize(raw, conn.msgtype)


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_make_bag_writes_the_contract_topics(tmp_path, storage, capsys):
    from llmos_ros.sim import make_bag
    out = tmp_path / 'sim'
    assert make_bag.main(['--out', str(out), '--duration', '9', '--seed', '4',
                          '--storage', storage, '--quiet']) == 0
    assert 'wrote' in capsys.readouterr().out
    msgs = list(_read_bag(out))
    counts = Counter(topic for topic, _, _, _ in msgs)
    assert counts == {'/camera/image_raw': 270, '/tactile/array': 900, '/microphone/audio': 450,
                      '/episode/label': 3}
    types = {topic: t for topic, t, _, _ in msgs}
    assert types == {'/camera/image_raw': 'sensor_msgs/msg/Image',
                     '/tactile/array': 'llmos_ros/msg/TactileArray',
                     '/microphone/audio': 'llmos_ros/msg/AudioChunk',
                     '/episode/label': 'std_msgs/msg/String'}
    scene = Scene(seed=4, start_ns=make_bag.DEFAULT_START_NS)
    labels = [msg.data for topic, _, _, msg in msgs if topic == '/episode/label']
    assert labels == [scene.label(k) for k in range(3)]
    for topic, _, stamp, msg in msgs:
        if topic != '/episode/label':
            assert msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec == stamp
    first = next(m for t, _, _, m in msgs if t == '/camera/image_raw')
    assert (first.encoding, first.height, first.width) == ('rgb8', 32, 32)
    assert bytes(first.data) == scene.camera_frame(0).data.tobytes()
    # An existing folder is refused, not overwritten.
    assert make_bag.main(['--out', str(out), '--duration', '1', '--quiet']) == 2


def test_make_bag_options(tmp_path):
    from llmos_ros.sim import make_bag
    out = tmp_path / 'small'
    assert make_bag.main(['--out', str(out), '--duration', '2', '--set', 'image_width=16',
                          '--set', 'channels=3', '--without', 'audio', '--quiet']) == 0
    msgs = list(_read_bag(out))
    assert '/microphone/audio' not in {t for t, _, _, _ in msgs}
    tact = next(m for t, _, _, m in msgs if t == '/tactile/array')
    assert (tact.rows, tact.cols, tact.channels) == (8, 8, 3)
    img = next(m for t, _, _, m in msgs if t == '/camera/image_raw')
    assert img.width == 16
    assert make_bag.main(['--out', str(tmp_path / 'bad'), '--duration', '1',
                          '--set', 'nope=1', '--quiet']) == 2


# -- live node over real DDS ------------------------------------------------------------------


def _set_param(node, executor, name, value):
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    client = node.create_client(SetParameters, '/llmos_sim_source/set_parameters')
    assert client.wait_for_service(timeout_sec=10.0)
    if isinstance(value, bool):
        pv = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
    else:
        pv = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
    future = client.call_async(SetParameters.Request(
        parameters=[Parameter(name=name, value=pv)]))
    assert spin_until(node, future.done, 10.0, executor)
    node.destroy_client(client)
    return future.result().results[0]


@pytest.mark.ros
@pytest.mark.slow
def test_sim_source_node_publishes_live_and_switches_streams(rclpy_context):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from llmos_ros.msg import AudioChunk, TactileArray

    proc = subprocess.Popen(
        python_cmd('llmos_ros.nodes.sim_source_node', '--ros-args', '--params-file',
                   str(ROOT / 'config' / 'sim_source.yaml'), '-p', 'seed:=5'),
        env=python_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    node = rclpy.create_node('sim_source_test', context=rclpy_context)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    got = {t: [] for t in (CAMERA_TOPIC, AUDIO_TOPIC, TACTILE_TOPIC, LABEL_TOPIC)}

    def keep(topic):
        def callback(msg):
            now = node.get_clock().now().nanoseconds
            stamp = (msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                     if hasattr(msg, 'header') else 0)
            got[topic].append((now, stamp, msg))
        return callback

    try:
        for topic, cls in ((CAMERA_TOPIC, Image), (AUDIO_TOPIC, AudioChunk),
                           (TACTILE_TOPIC, TactileArray)):
            node.create_subscription(cls, topic, keep(topic), qos_profile_sensor_data)
        node.create_subscription(String, LABEL_TOPIC, keep(LABEL_TOPIC), QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL))
        assert spin_until(node, lambda: all(got.values()), 30.0, executor), \
            {t: len(v) for t, v in got.items()}
        for v in got.values():
            v.clear()
        t0 = time.monotonic()
        spin_until(node, lambda: False, 3.0, executor)
        span = time.monotonic() - t0
        rates = {t: len(got[t]) / span for t in (CAMERA_TOPIC, AUDIO_TOPIC, TACTILE_TOPIC)}
        assert 20 <= rates[CAMERA_TOPIC] <= 36, rates
        assert 35 <= rates[AUDIO_TOPIC] <= 60, rates
        assert 70 <= rates[TACTILE_TOPIC] <= 115, rates
        for topic in (CAMERA_TOPIC, AUDIO_TOPIC, TACTILE_TOPIC):
            stamps = [s for _, s, _ in got[topic]]
            assert stamps == sorted(stamps)
            # Stamped by the scene, close to (and not after) the arrival time.
            assert all(-0.05e9 < now - s < 0.5e9 for now, s, _ in got[topic])
        audio = [m for _, _, m in got[AUDIO_TOPIC]]
        assert {(m.sample_rate, m.channels, len(m.samples)) for m in audio} == {(16000, 1, 320)}
        img = got[CAMERA_TOPIC][0][2]
        assert (img.encoding, img.width, img.height, len(img.data)) == ('rgb8', 32, 32, 3072)
        assert img.header.frame_id == 'sim_camera'

        # Switch the taxels off at runtime: the stream stops, the others go on.
        assert _set_param(node, executor, 'enable_tactile', False).successful
        spin_until(node, lambda: False, 0.3, executor)
        for v in got.values():
            v.clear()
        spin_until(node, lambda: False, 1.5, executor)
        assert len(got[TACTILE_TOPIC]) == 0
        assert len(got[CAMERA_TOPIC]) > 20 and len(got[AUDIO_TOPIC]) > 30
        # And back on.
        assert _set_param(node, executor, 'enable_tactile', True).successful
        assert spin_until(node, lambda: len(got[TACTILE_TOPIC]) > 20, 5.0, executor)
        # Scene settings are fixed at start.
        result = _set_param(node, executor, 'seed', 9)
        assert not result.successful
    finally:
        node.destroy_node()
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert proc.returncode == 0, out
    assert 'stopping' in out and 'Traceback' not in out


@pytest.mark.ros
def test_sim_source_node_stops_after_duration_and_rejects_bad_values():
    proc = subprocess.run(
        python_cmd('llmos_ros.nodes.sim_source_node', '--ros-args', '-p', 'duration_s:=1.0'),
        env=python_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = subprocess.run(
        python_cmd('llmos_ros.nodes.sim_source_node', '--ros-args',
                   '-p', 'tactile_jitter_s:=0.02'),
        env=python_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert 'tactile_jitter_s' in proc.stdout + proc.stderr
    assert 'Traceback' not in proc.stdout + proc.stderr
