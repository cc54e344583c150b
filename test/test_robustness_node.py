"""Configure abuse over real DDS: the node stays up, unconfigured, and says why."""
import subprocess

from helpers import python_cmd, python_env, spin_until
import numpy as np
import pytest

pytestmark = pytest.mark.ros


@pytest.mark.parametrize('values, match', [
    ({'device': 'cuda:9'}, r"device 'cuda:9'"),
    ({'device': 'gpu0'}, r"device 'gpu0' is not a device"),
    ({'camera_transport': 'theora'}, r"camera_transport 'theora' is not one of raw, compressed"),
    ({'max_wait_s': 1e6}, r'max_wait_s 1000000.0 is out of range'),
    ({'diagnostics_period_s': 0.0}, r'diagnostics_period_s 0.0 is out of range'),
    ({'diagnostics_period_s': -1.0}, r'diagnostics_period_s -1.0 is out of range'),
    ({'prediction_rate_hz': -5.0}, r'prediction_rate_hz -5.0 is out of range'),
    ({'slop_s': float('nan')}, r'slop_s nan is out of range'),
    ({'torch_threads': -1}, r'torch_threads -1 is out of range'),
    ({'backend': 'tensorrt'}, r"backend 'tensorrt' is not one of torch, onnxruntime"),
    ({'backend': 'onnxruntime', 'device': 'cuda'},
     r"backend 'onnxruntime' runs on the cpu only: device 'cuda' needs backend 'torch'"),
])
def test_bad_parameters_are_rejected_with_the_reason(values, match):
    from llmos_ros.errors import ConfigError
    from llmos_ros.nodes.perception_node import check_parameters
    good = {'backend': 'torch', 'device': 'cpu', 'camera_transport': 'raw', 'slop_s': -1.0,
            'max_wait_s': -1.0, 'max_age_s': -1.0, 'diagnostics_period_s': 1.0,
            'prediction_rate_hz': 10.0, 'audio_prediction_iterations': 4, 'torch_threads': 1}
    check_parameters(good)
    with pytest.raises(ConfigError, match=match):
        check_parameters({**good, **values})


class _Payload:
    """Unpickling this would create a file: the payload of a tampered checkpoint."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def _tampered(model, folder):
    """A copy of `model` carrying a pickled payload; its marker file must never appear."""
    import torch
    raw = torch.load(model, weights_only=True)
    raw['extra'] = {'evil': _Payload(folder / 'payload_ran')}
    path = folder / 'tampered.pt'
    torch.save(raw, path)
    return path


def _unconfigured_status(arrays):
    for array in arrays:
        for status in array.status:
            values = {v.key: v.value for v in status.values}
            if values.get('state') == 'unconfigured':
                return status, values
    return None, None


@pytest.mark.parametrize('overrides, match', [
    ({'modalities': ['camera', 'sonar']}, r"modalities \['sonar'\] are not in the model"),
    ({'sync_overrides': {'max_wait_s': 5.0}}, 'sync.jump_s must be > 0 and > sync.max_wait_s'),
    ({'device': 'cuda:9'}, "device 'cuda:9'"),
])
def test_engine_refuses_what_the_model_cannot_run(sim_model, overrides, match):
    from llmos_ros.checkpoint import load_checkpoint
    from llmos_ros.errors import ConfigError
    from llmos_ros.inference import PerceptionEngine
    loaded = load_checkpoint(sim_model[1])
    with pytest.raises(ConfigError, match=match):
        PerceptionEngine(loaded, **{'device': 'cpu', **overrides})


# over DDS: one parameter error and one checkpoint error (each a node process, ~10 s)
@pytest.mark.parametrize('params, reason', [
    (['-p', 'device:=cuda:9'], "device 'cuda:9'"),
    (['-p', 'model_path:={tampered}'], 'pickled objects, which are never loaded'),
])
def test_configure_error_is_logged_once_and_reported_in_diagnostics(sim_model, rclpy_context,
                                                                       tmp_path, params, reason):
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    _, model = sim_model
    params = [p.format(tampered=_tampered(model, tmp_path)) for p in params]
    node = Node('llmos_test_diag', context=rclpy_context)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    arrays = []
    node.create_subscription(DiagnosticArray, '/diagnostics', arrays.append, 10)
    proc = subprocess.Popen(python_cmd('llmos_ros.nodes.perception_node', '--ros-args', '-p',
                                       f'model_path:={model}', *params,
                                       '-p', 'diagnostics_period_s:=0.2'),
                            env=python_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert spin_until(node, lambda: _unconfigured_status(arrays)[0] is not None
                          and reason in _unconfigured_status(arrays)[1]['error'], 40.0,
                          executor), [a.status for a in arrays[-1:]]
        assert proc.poll() is None  # alive
        status, _ = _unconfigured_status(arrays)
        assert status.level == bytes([2]) and status.message.startswith('unconfigured: ')
    finally:
        proc.terminate()
        out = proc.communicate(timeout=15)[0]
        executor.shutdown()
        node.destroy_node()
    errors = [line for line in out.splitlines() if 'staying unconfigured' in line]
    assert len(errors) == 1 and reason in errors[0], out
    assert 'Traceback' not in out
    assert not (tmp_path / 'payload_ran').exists()


def test_runner_exits_non_zero_when_perception_never_configured(tmp_path):
    proc = subprocess.run(python_cmd('llmos_ros.nodes.runner',
                                     f'model:={tmp_path / "missing.pt"}', 'duration:=2'),
                          env=python_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert 'checkpoint not found' in proc.stderr + proc.stdout
    assert 'never configured; nothing was published' in proc.stderr


class Feed:
    """Camera 32x32 rgb8, taxels 8x8, audio chunks, stamped on a virtual clock of 20 ms steps."""

    def __init__(self, node, executor, base_ns: int):
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image

        from llmos_ros.msg import AudioChunk, LatentState, TactileArray
        self.node, self.executor, self.base_ns, self.k = node, executor, base_ns, 0
        self.rate, self.size, self.encoding = 16000, (32, 32), 'rgb8'
        self.types = {'camera': Image, 'audio': AudioChunk, 'tactile': TactileArray}
        self.topics = {'camera': 'camera/image_raw', 'audio': 'microphone/audio',
                       'tactile': 'tactile/array'}
        self.pubs = {n: node.create_publisher(self.types[n], self.topics[n],
                                              qos_profile_sensor_data) for n in self.types}
        self.latents, self.drops, self.inputs = [], {}, {}
        node.create_subscription(LatentState, 'llmos/latent', self._latent, 100)
        from diagnostic_msgs.msg import DiagnosticArray
        node.create_subscription(DiagnosticArray, '/diagnostics', self._diag, 10)

    def _latent(self, msg):
        self.latents.append((msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec,
                             set(msg.modalities)))

    def _diag(self, array):
        for status in array.status:
            values = {v.key: v.value for v in status.values}
            if status.name.endswith(': model'):
                self.drops = {k[6:]: int(v) for k, v in values.items() if k.startswith('drops/')}
            elif 'received' in values:
                self.inputs[status.hardware_id] = values

    def stamp(self, ns: int):
        from builtin_interfaces.msg import Time
        return Time(sec=ns // 10**9, nanosec=ns % 10**9)

    def now_ns(self) -> int:
        return self.base_ns + self.k * 20_000_000

    def image(self, ns: int, size=None, encoding=None):
        h, w = size or self.size
        encoding = encoding or self.encoding
        ch = 3 if encoding == 'rgb8' else 1
        msg = self.types['camera'](height=h, width=w, encoding=encoding, step=w * ch)
        msg.header.stamp = self.stamp(ns)
        msg.data = bytes([(self.k * 7) % 256]) * (h * w * ch)
        return msg

    def chunk(self, ns: int, rate: int, samples: int, channels: int = 1):
        msg = self.types['audio'](sample_rate=rate, channels=channels)
        msg.header.stamp = self.stamp(ns)
        msg.samples = np.full(samples, 0.01, np.float32)
        return msg

    def taxels(self, ns: int):
        msg = self.types['tactile'](rows=8, cols=8, channels=1)
        msg.header.stamp = self.stamp(ns)
        msg.values = np.full(64, 0.1, np.float32)
        return msg

    def step(self, camera=True):
        self.k += 1
        t = self.now_ns()
        self.pubs['audio'].publish(self.chunk(t - 20_000_000, self.rate, self.rate // 50))
        self.pubs['tactile'].publish(self.taxels(t))
        if camera:
            self.pubs['camera'].publish(self.image(t))
        self.executor.spin_once(timeout_sec=0.02)

    def run_until(self, predicate, timeout_s=20.0, camera=True) -> bool:
        import time
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            self.step(camera)
        return predicate()

    def fused_after(self, ns: int, count: int = 3) -> bool:
        """`count` latents stamped >= ns, the last one with every modality."""
        later = [m for t, m in self.latents if t >= ns]
        return len(later) >= count and later[-1] == {'camera', 'audio', 'tactile'}

    def recovers(self, what: str) -> None:
        start = self.now_ns() + 20_000_000
        assert self.run_until(lambda: self.fused_after(start)), \
            f'no fused latents after {what}: drops {self.drops}, last {self.latents[-3:]}'


def test_sensor_faults_over_dds_each_recover_without_restart(sim_model, rclpy_context):
    """One node, one fault after the other; each has its outcome; the node keeps working."""
    import time

    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    _, model = sim_model
    node = Node('llmos_test_faults', context=rclpy_context)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    feed = Feed(node, executor, base_ns=time.time_ns())
    proc = subprocess.Popen(python_cmd('llmos_ros.nodes.perception_node', '--ros-args', '-p',
                                       f'model_path:={model}', '-p', 'diagnostics_period_s:=0.2',
                                       '-p', 'publish_predictions:=false'),
                            env=python_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert spin_until(node, lambda: all(p.get_subscription_count() > 0
                                            for p in feed.pubs.values()), 40.0, executor)
        feed.recovers('start')
        # one camera frame stamped in 2038: that frame is dropped, nothing else
        feed.pubs['camera'].publish(feed.image(2_145_000_000 * 10**9))
        feed.recovers('a far-future camera stamp')
        # taxels from the future and audio stamped zero: dropped as off the time line
        feed.pubs['tactile'].publish(feed.taxels(2_145_000_000 * 10**9))
        feed.pubs['audio'].publish(feed.chunk(0, 16000, 320))
        feed.recovers('far-off taxel and audio stamps')
        # every clock steps back 30 s (a looping bag), then forward by an hour
        feed.base_ns -= 30 * 10**9
        feed.recovers('stamps stepping back 30 s')
        feed.base_ns += 3600 * 10**9
        feed.recovers('stamps jumping an hour ahead')
        # the camera freezes: the same stamp again and again, then comes back
        frozen = feed.now_ns()
        for _ in range(5):
            feed.pubs['camera'].publish(feed.image(frozen))
            feed.step(camera=False)
        feed.recovers('a frozen camera')
        # the microphone switches to 44.1 kHz; the camera to 64x48 mono8
        feed.rate = 44100
        feed.size, feed.encoding = (48, 64), 'mono8'
        feed.recovers('a sample rate and a resolution/encoding switch')
        # the camera publisher dies and a new one comes back
        from rclpy.qos import qos_profile_sensor_data
        node.destroy_publisher(feed.pubs['camera'])
        for _ in range(10):
            feed.step(camera=False)
        feed.pubs['camera'] = node.create_publisher(feed.types['camera'], 'camera/image_raw',
                                                    qos_profile_sensor_data)
        assert spin_until(node, lambda: feed.pubs['camera'].get_subscription_count() > 0,
                          20.0, executor)
        feed.recovers('the camera publisher coming back')
        # implausible messages: 1 MHz and 1 Hz audio, 100 channels, a 5000x5000 image header
        t = feed.now_ns()
        feed.pubs['audio'].publish(feed.chunk(t, 1_000_000, 320))
        feed.pubs['audio'].publish(feed.chunk(t, 1, 320))
        feed.pubs['audio'].publish(feed.chunk(t, 16000, 200, channels=100))
        huge = feed.image(t, size=(1, 1))
        huge.height = huge.width = 5000
        feed.pubs['camera'].publish(huge)
        feed.recovers('implausible audio chunks and a huge image header')
        wanted = {'camera/stamp_jump', 'tactile/off_timeline', 'audio/off_timeline',
                  'camera/stamp_repeated', 'audio/sample_rate', 'audio/too_large',
                  'camera/too_large'}
        assert feed.run_until(lambda: wanted <= set(feed.drops), 10.0), feed.drops
    finally:
        proc.terminate()
        out = proc.communicate(timeout=15)[0]
        executor.shutdown()
        node.destroy_node()
    assert proc.returncode == 0 and 'Traceback' not in out, out
    assert feed.drops['audio/sample_rate'] == 2 and feed.drops['camera/stamp_repeated'] == 5
    for name, values in feed.inputs.items():  # every message accounted for
        refused = sum(int(v) for k, v in values.items() if k.startswith('refused/'))
        assert int(values['received']) == int(values['accepted']) + refused, (name, values)
        assert refused == int(values['refused'])
    assert int(feed.inputs['camera']['refused/stamp_repeated']) == 5
