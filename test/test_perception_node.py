"""perception_node live over real DDS: simulated source -> perception -> test subscribers."""
import time

from helpers import spin_until, stamp_ns, start_node, stop_nodes
import numpy as np
import pytest

pytestmark = pytest.mark.ros


_ns, _start, _stop = stamp_ns, start_node, stop_nodes


class Watcher:
    """Records what a planner would see: latents, inputs, predictions, diagnostics."""

    def __init__(self, node):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from llmos_ros.msg import AudioChunk, LatentState, TactileArray
        self.latents, self.diagnostics = [], []
        self.inputs = {'camera': set(), 'audio': set(), 'tactile': set()}
        self.predictions = {'camera': [], 'audio': [], 'tactile': []}
        node.create_subscription(LatentState, 'llmos/latent', self.latents.append, 100)
        node.create_subscription(DiagnosticArray, '/diagnostics', self.diagnostics.append, 10)
        for name, kind, topic in (('camera', Image, 'camera/image_raw'),
                                  ('audio', AudioChunk, 'microphone/audio'),
                                  ('tactile', TactileArray, 'tactile/array')):
            node.create_subscription(kind, topic,  # deep: a slow test spin must not lose any
                                     lambda m, n=name: self.inputs[n].add(_ns(m.header.stamp)),
                                     QoSProfile(depth=500,
                                                reliability=ReliabilityPolicy.BEST_EFFORT))
            node.create_subscription(kind, f'llmos/prediction/{name}',
                                     self.predictions[name].append, 10)

    def drops(self) -> dict:
        """Latest perception drop counters from /diagnostics."""
        out = {}
        for array in self.diagnostics:
            for status in array.status:
                if status.name.endswith(': model'):
                    out = {v.key: int(v.value) for v in status.values
                           if v.key.startswith('drops/')}
        return out


@pytest.fixture
def ros_node(rclpy_context):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    node = Node('llmos_test_watcher', context=rclpy_context)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    yield node, executor
    executor.shutdown()
    node.destroy_node()


def _set_param(node, executor, target, name, value):
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    client = node.create_client(SetParameters, f'/{target}/set_parameters')
    assert spin_until(node, client.service_is_ready, 20.0, executor)
    request = SetParameters.Request(parameters=[Parameter(name=name, value=ParameterValue(
        type=ParameterType.PARAMETER_BOOL, bool_value=value))])
    future = client.call_async(request)
    assert spin_until(node, future.done, 10.0, executor)
    assert future.result().results[0].successful


def _after_first_frame(watcher) -> list:
    """The latents stamped at or after the first camera frame the watcher received."""
    if not watcher.inputs['camera']:
        return []
    first_seen = min(watcher.inputs['camera'])
    return [m for m in watcher.latents if _ns(m.header.stamp) >= first_seen]


def test_live_latents_follow_the_inputs(sim_model, ros_node):
    node, executor = ros_node
    _, model = sim_model
    watcher = Watcher(node)
    perception = _start('llmos_ros.nodes.perception_node', '-p', f'model_path:={model}',
                        '-p', 'prediction_rate_hz:=20.0')
    sim = _start('llmos_ros.nodes.sim_source_node')
    try:
        # at least 20 latents stamped at or after the first camera frame this node saw (under
        # load the watcher may match the sim's publishers well after the perception node did)
        assert spin_until(node, lambda: len(_after_first_frame(watcher)) >= 20, 60.0,
                          executor), ('no latent states', len(watcher.latents))
        # switch the tactile stream off mid-run, then on again
        _set_param(node, executor, 'llmos_sim_source', 'enable_tactile', False)
        off_at = len(watcher.latents)
        assert spin_until(node, lambda: any('tactile' not in m.modalities
                                            for m in watcher.latents[off_at:]), 20.0, executor)
        _set_param(node, executor, 'llmos_sim_source', 'enable_tactile', True)
        on_at = len(watcher.latents)
        assert spin_until(node, lambda: any('tactile' in m.modalities
                                            for m in watcher.latents[on_at:]), 20.0, executor)
        assert spin_until(node, lambda: all(watcher.predictions.values())
                          and watcher.diagnostics, 20.0, executor)
    finally:
        logs = _stop(sim, perception)
    assert 'Traceback' not in ''.join(logs), logs
    # the watcher may match the sim's publishers after the perception node did (discovery under
    # load): stamps are checked from the first camera frame the watcher saw on
    checked = _after_first_frame(watcher)
    assert len(checked) >= 20, (len(checked), len(watcher.latents))
    for msg in checked:
        # output stamps are input stamps: the camera frame (reference) and each modality's input
        assert _ns(msg.header.stamp) in watcher.inputs['camera']
        assert len(msg.modalities) == len(msg.modality_stamps)
        for name, stamp in zip(msg.modalities, msg.modality_stamps):
            if name != 'audio' and _ns(stamp) >= min(watcher.inputs[name]):
                # (audio chunks are stamped by their first sample)
                assert _ns(stamp) in watcher.inputs[name], name
        assert len(msg.mean) == len(msg.std) == (
            msg.shared_dim + msg.private_dim * len(msg.private_modalities))
        assert msg.shared_dim > 0
        assert np.all(np.isfinite(msg.mean)) and np.all(np.asarray(msg.std) > 0)
        assert msg.model_id and msg.fusion == 'mopoe'
    stamps = [_ns(m.header.stamp) for m in watcher.latents]
    assert stamps == sorted(stamps)
    camera = watcher.predictions['camera'][-1]
    assert (camera.height, camera.width, camera.encoding) == (32, 32, 'rgb8')
    assert watcher.predictions['audio'][-1].sample_rate == 16000
    assert watcher.predictions['tactile'][-1].rows == 8


def _image(stamp, encoding='rgb8', size=32, fill=100):
    from sensor_msgs.msg import Image
    channels = {'rgb8': 3, 'mono8': 1, 'yuv422': 2}[encoding]
    msg = Image(height=size, width=size, encoding=encoding, step=size * channels)
    msg.header.stamp = stamp
    msg.data = bytes([fill]) * (size * size * channels)
    return msg


def test_bad_inputs_are_counted_and_the_node_keeps_publishing(sim_model, ros_node):
    """Also: the node runs on the onnxruntime backend (parameter backend)."""
    from builtin_interfaces.msg import Time
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from llmos_ros.msg import AudioChunk, TactileArray
    node, executor = ros_node
    _, model = sim_model
    watcher = Watcher(node)
    camera = node.create_publisher(Image, 'camera/image_raw', qos_profile_sensor_data)
    audio = node.create_publisher(AudioChunk, 'microphone/audio', qos_profile_sensor_data)
    tactile = node.create_publisher(TactileArray, 'tactile/array', qos_profile_sensor_data)
    perception = _start('llmos_ros.nodes.perception_node', '-p', f'model_path:={model}',
                        '-p', 'diagnostics_period_s:=0.2', '-p', 'backend:=onnxruntime')
    try:
        assert spin_until(node, lambda: all(p.get_subscription_count() > 0
                                            for p in (camera, audio, tactile)), 30.0, executor)
        t0 = time.time_ns()

        def stamp(k):
            ns = t0 + k * 20_000_000
            return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)

        def good_step(k, rate=16000):
            chunk = AudioChunk(sample_rate=rate, channels=1)
            chunk.header.stamp = stamp(k - 1)
            chunk.samples = np.zeros(rate // 50, np.float32)
            audio.publish(chunk)
            tac = TactileArray(rows=8, cols=8, channels=1)
            tac.header.stamp = stamp(k)
            tac.values = np.full(64, 0.1, np.float32)
            tactile.publish(tac)
            camera.publish(_image(stamp(k)))

        k = 1
        deadline = time.monotonic() + 20.0
        while not watcher.latents and time.monotonic() < deadline:  # healthy until matched
            good_step(k)
            k += 1
            spin_until(node, lambda: False, 0.02, executor)
        assert watcher.latents, 'no latent states from healthy inputs'
        bad = []
        camera.publish(_image(stamp(k), encoding='yuv422'))
        bad.append('drops/camera/encoding')
        wrong = _image(stamp(k + 1))
        wrong.data = wrong.data[:-5]
        camera.publish(wrong)
        bad.append('drops/camera/size')
        nan = TactileArray(rows=8, cols=8, channels=1)
        nan.header.stamp = stamp(k + 2)
        nan.values = np.full(64, np.nan, np.float32)
        tactile.publish(nan)
        bad.append('drops/tactile/nan')
        odd = TactileArray(rows=4, cols=4, channels=1)
        odd.header.stamp = stamp(k + 3)
        odd.values = np.zeros(16, np.float32)
        tactile.publish(odd)
        bad.append('drops/tactile/size')
        zero_rate = AudioChunk(sample_rate=0, channels=1)
        zero_rate.header.stamp = stamp(k + 3)
        zero_rate.samples = np.zeros(320, np.float32)
        audio.publish(zero_rate)
        bad.append('drops/audio/sample_rate')
        camera.publish(_image(stamp(k - 10)))  # stamp going backwards (< jump_s)
        bad.append('drops/camera/stamp_backwards')
        k += 5
        before = len(watcher.latents)
        for _ in range(20):  # 8 kHz audio is another rate, resampled, not an error
            good_step(k, rate=8000)
            k += 1
            spin_until(node, lambda: False, 0.02, executor)
        assert spin_until(node, lambda: set(bad) <= set(watcher.drops())
                          and len(watcher.latents) > before + 5, 15.0, executor), \
            (watcher.drops(), len(watcher.latents) - before)
    finally:
        logs = _stop(perception)
    assert perception.returncode == 0
    assert 'Traceback' not in logs[0], logs[0]
    assert 'dropped' in logs[0]  # drops are logged (throttled), not only counted
    assert 'backend onnxruntime' in logs[0]  # the whole test ran on the onnxruntime backend
    assert any(set(m.modalities) == {'camera', 'audio', 'tactile'}
               for m in watcher.latents[-5:])
