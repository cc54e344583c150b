"""The force-torque kind: window exactness, bags, training, evaluation and the live node."""
import contextlib
import io
import json
import time

from helpers import spin_until, stamp_ns, start_node, stop_nodes
import numpy as np
import pytest
import torch

from llmos_ros.config import ModalityConfig
from llmos_ros.core.bags import BagWriter, bag_topics, read_bag
from llmos_ros.core.dataset import infer_modalities
from llmos_ros.core.preprocess import Preprocessor, compute_stats
from llmos_ros.errors import InputError
from llmos_ros.kinds import frame_from_msg
from llmos_ros.kinds.wrench import WRENCH_STAMPED, WrenchFrame
from llmos_ros.sim.make_bag import DEFAULT_START_NS
from llmos_ros.sim.scene import CAMERA_TOPIC, LABEL_TOPIC, Scene, SceneConfig

WRENCH_TOPIC = 'force_torque/wrench'
SCENE = dict(episode_s=1.0, image_height=16, image_width=16)
MS = 1_000_000


def wrench_mod(window_s=-1.0, grid_hz=100.0):
    return ModalityConfig('wrench', 'wrench', WRENCH_TOPIC, WRENCH_STAMPED, window_s=window_s,
                          grid_hz=grid_hz)


def frames(stamps_ms, values):
    return [WrenchFrame(int(round(t * MS)), np.asarray(v, np.float32)) for t, v in
            zip(stamps_ms, values)]


AXIS = np.arange(1, 7, dtype=np.float32)  # axis a of a frame holds (a + 1) x its value


def test_default_window_is_32_steps_of_the_100_hz_grid():
    mod = wrench_mod()
    assert (mod.window_s, mod.grid_hz) == (0.32, 100.0)
    assert mod.shape() == (6, 32, 1)
    assert wrench_mod(window_s=0.0).shape() == (6, 1, 1)


def test_window_bins_average_the_frames_of_t_minus_window_to_t():
    mod = wrench_mod(window_s=0.04)  # t = 100 ms: bins [60, 70), [70, 80), [80, 90), [90, 100)
    stamps = [55, 71, 75, 99, 100]  # 55 before the window, 100 at t: unused
    out = Preprocessor(mod)(frames(stamps, [t * AXIS for t in stamps]), 100 * MS)
    assert out.shape == (6, 4, 1)
    # bin 1 averages 71 and 75; bin 0 (leading, empty) and bin 2 (empty) hold it; bin 3 is 99
    np.testing.assert_allclose(out[:, :, 0], np.outer(AXIS, [73.0, 73.0, 73.0, 99.0]))


def test_a_1_khz_stream_is_averaged_ten_frames_a_step():
    mod = wrench_mod()  # 0.32 s at 100 Hz
    t = 1000.0  # ms
    stamps = [t - 320 + k for k in range(-5, 321)]  # 1 kHz, from before the window to t
    out = Preprocessor(mod)(frames(stamps, [(s - (t - 320)) * AXIS for s in stamps]),
                            int(t * MS))
    expect = np.arange(32) * 10 + 4.5  # step j: the mean of frames 10j .. 10j + 9 of the window
    np.testing.assert_allclose(out[:, :, 0], np.outer(AXIS, expect), rtol=1e-6)


def test_newest_frame_without_a_window_and_the_inverse_round_trip():
    newest = np.array([1.0, -2.0, 30.0, 0.1, -0.2, 0.03], np.float32)
    fr = frames([10, 20], [np.zeros(6), newest])
    out = Preprocessor(wrench_mod(window_s=0.0))(fr, 20 * MS)
    np.testing.assert_array_equal(out[:, 0, 0], newest)
    mod = wrench_mod(window_s=0.02)
    window = frames([0, 5, 10, 15], [newest * k for k in range(4)])
    stats = compute_stats([Preprocessor(mod)(window, 20 * MS) * s for s in (1.0, 3.0)])
    prep = Preprocessor(mod, stats)
    z = prep(window, 20 * MS)  # z-scored per axis
    pred = prep.prediction_frame(z, 20 * MS, 'ft')
    assert isinstance(pred, WrenchFrame) and (pred.stamp_ns, pred.frame_id) == (20 * MS, 'ft')
    np.testing.assert_allclose(pred.values, newest * 2.5, rtol=1e-5)  # newest step: 2 and 3


@pytest.mark.parametrize('frame, reason', [
    (WrenchFrame(0, np.array([0, 0, np.nan, 0, 0, 0], np.float32)), 'nan'),
    (None, 'type'),
])
def test_bad_wrench_is_an_input_error(frame, reason):
    from llmos_ros.kinds.taxels import TactileFrame
    frame = frame or TactileFrame(0, 1, 1, 1, np.zeros(1, np.float32))
    with pytest.raises(InputError) as err:
        Preprocessor(wrench_mod()).validate(frame)
    assert err.value.reason == reason


# ------------------------------------------------------------------------------ bags, training
def wrench_at(scene: Scene, stamp: int) -> WrenchFrame:
    """A fingertip F/T sensor in the simulated scene: press force, friction, moment arm."""
    s = scene.state_at((stamp - scene.start_ns) * 1e-9)
    fz = -20.0 * s.force
    fx, fy = 4.0 * s.force * s.vx, 4.0 * s.force * s.vy
    arm = 0.02  # m per unit of contact position
    values = [fx, fy, fz, arm * s.y * fz, -arm * s.x * fz, arm * (s.x * fy - s.y * fx)]
    return WrenchFrame(stamp, np.asarray(values, np.float32), 'sim_ft')


def write_wrench_bag(path, duration_s: float, seed: int, rate_hz: float = 200.0) -> None:
    """Camera, labels and a WrenchStamped stream of the simulated scene."""
    scene = Scene(SceneConfig(**SCENE), seed=seed, start_ns=DEFAULT_START_NS)
    items = list(scene.events(duration_s, topics=(LABEL_TOPIC, CAMERA_TOPIC)))
    for i in range(int(duration_s * rate_hz)):
        stamp = DEFAULT_START_NS + int(round(i * 1e9 / rate_hz))
        items.append((stamp, WRENCH_TOPIC, wrench_at(scene, stamp)))
    items.sort(key=lambda item: (item[0], item[1] != LABEL_TOPIC))
    with BagWriter(path) as writer:
        for stamp, topic, item in items:
            if topic == LABEL_TOPIC:
                writer.write_label('/' + topic, stamp, item)
            else:
                writer.write_frame('/' + topic, item)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """Train and test bags with a wrench, a model trained a few steps and its evaluation."""
    from llmos_ros import train
    from llmos_ros.evaluation.cli import main as eval_main
    threads = torch.get_num_threads()
    d = tmp_path_factory.mktemp('wrench')
    write_wrench_bag(d / 'train', 3.0, seed=1)
    write_wrench_bag(d / 'test', 2.0, seed=2)
    (d / 'cfg.yaml').write_text('model: {hidden: 32, latent_dim: 6}\n'
                                'train: {batch_size: 16, steps: 3, val_fraction: 0.0}\n')
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert train.main(['--bag', str(d / 'train'), '--out', str(d / 'm.pt'), '--config',
                           str(d / 'cfg.yaml'), '--quiet', '--threads', '1']) == 0
        code = eval_main(['--bag', str(d / 'test'), '--model', str(d / 'm.pt'), '--out',
                          str(d / 'rep'), '--train-bag', str(d / 'train'), '--record',
                          '--coherence-epochs', '1', '--threads', '1', '--quiet'])
    torch.set_num_threads(threads)
    assert code == 0, err.getvalue()
    return d


def test_bag_round_trip_and_inferred_modality(tmp_path):
    frame = WrenchFrame(DEFAULT_START_NS, np.arange(6, dtype=np.float32) - 2.5, 'ft')
    with BagWriter(tmp_path / 'b') as writer:
        writer.write_frame('/' + WRENCH_TOPIC, frame)
    assert bag_topics(tmp_path / 'b') == {'/' + WRENCH_TOPIC: WRENCH_STAMPED}
    [(_, mtype, _, msg)] = list(read_bag(tmp_path / 'b'))
    back = frame_from_msg(mtype, msg)
    assert (back.stamp_ns, back.frame_id) == (frame.stamp_ns, 'ft')
    np.testing.assert_array_equal(back.values, frame.values)
    mods = infer_modalities(tmp_path / 'b')
    assert list(mods) == ['wrench'] and mods['wrench'].kind == 'wrench'
    assert mods['wrench'].topic == '/' + WRENCH_TOPIC


def test_a_bag_with_wrench_and_camera_trains_and_evaluates(trained):
    from llmos_ros.checkpoint import load_checkpoint
    loaded = load_checkpoint(trained / 'm.pt')
    assert list(loaded.cfg.modalities) == ['camera', 'wrench']
    assert loaded.cfg.modalities['wrench'].shape() == (6, 32, 1)
    report = json.loads((trained / 'rep' / 'metrics.json').read_text())
    assert report['modalities'] == ['camera', 'wrench']
    assert report['kinds'] == {'camera': 'image', 'wrench': 'wrench'}
    assert report['counts']['samples'] > 0
    full = next(e for e in report['subsets'] if e['subset'] == ['camera', 'wrench'])
    assert full['n_samples'] > 0 and np.isfinite(full['recon']['wrench']['mse'])
    predictions = [msg for _, t, _, msg in read_bag(trained / 'rep' / 'recorded',
                                                    topics=['/llmos/prediction/wrench'])]
    assert predictions and predictions[0].header.frame_id == 'llmos'
    values = frame_from_msg(WRENCH_STAMPED, predictions[-1]).values
    assert values.shape == (6,) and np.isfinite(values).all()


# --------------------------------------------------------------------------------- live node
@pytest.mark.ros
def test_perception_node_subscribes_to_wrench_and_publishes_latents_using_it(trained,
                                                                              rclpy_context):
    from builtin_interfaces.msg import Time
    from geometry_msgs.msg import WrenchStamped
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from llmos_ros.msg import LatentState
    node = Node('llmos_test_wrench', context=rclpy_context)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    latents, predictions = [], []
    node.create_subscription(LatentState, 'llmos/latent', latents.append, 100)
    node.create_subscription(WrenchStamped, 'llmos/prediction/wrench', predictions.append, 10)
    camera = node.create_publisher(Image, CAMERA_TOPIC, qos_profile_sensor_data)
    wrench = node.create_publisher(WrenchStamped, WRENCH_TOPIC, qos_profile_sensor_data)
    perception = start_node('llmos_ros.nodes.perception_node', '-p',
                            f'model_path:={trained / "m.pt"}', '-p', 'prediction_rate_hz:=50.0')
    try:
        assert spin_until(node, lambda: camera.get_subscription_count() > 0
                          and wrench.get_subscription_count() > 0, 30.0, executor)
        t0 = time.time_ns()

        def stamp(ns):
            return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)

        k = 0
        deadline = time.monotonic() + 30.0
        while not (latents and predictions) and time.monotonic() < deadline:
            for j in range(5):  # 10 ms apart, before the camera frame
                msg = WrenchStamped()
                msg.header.stamp = stamp(t0 + (k * 50 + j * 10) * MS)
                msg.wrench.force.z = -5.0
                msg.wrench.torque.x = 0.01 * j
                wrench.publish(msg)
            img = Image(height=16, width=16, encoding='rgb8', step=48)
            img.header.stamp = stamp(t0 + (k * 50 + 45) * MS)
            img.data = bytes([90]) * (16 * 16 * 3)
            camera.publish(img)
            k += 1
            spin_until(node, lambda: False, 0.05, executor)
    finally:
        logs = stop_nodes(perception)
        executor.shutdown()
        node.destroy_node()
    assert 'Traceback' not in logs[0], logs[0]
    used = [m for m in latents if 'wrench' in m.modalities]
    assert used, (len(latents), logs[0][-2000:])
    msg = used[-1]
    wrench_stamp = stamp_ns(msg.modality_stamps[list(msg.modalities).index('wrench')])
    assert 0 < stamp_ns(msg.header.stamp) - wrench_stamp <= 50 * MS  # the newest in its window
    assert np.isfinite(msg.mean).all() and len(msg.mean) == len(msg.std)
    assert predictions and np.isfinite(predictions[-1].wrench.force.z)
