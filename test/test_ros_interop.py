"""ROS interop over real DDS: remapped graph, QoS, parameters, frame ids, the debug image."""
import subprocess
import time

from helpers import python_cmd, python_env, spin_until
import numpy as np
import pytest

pytestmark = pytest.mark.ros

CAMERA_RGB = (200, 10, 30)


class Feeder:
    """Publishes consistent camera (a uniform CAMERA_RGB image), audio and taxel inputs."""

    def __init__(self, node, topics: dict, qos: dict, frames: dict):
        from sensor_msgs.msg import Image

        from llmos_ros.msg import AudioChunk, TactileArray
        from llmos_ros.nodes.qos import reliable_qos, sensor_qos
        profiles = {'reliable': reliable_qos(), 'best_effort': sensor_qos()}
        self.frames = frames
        self.pubs = {name: node.create_publisher(kind, topics[name], profiles[qos[name]])
                     for name, kind in (('camera', Image), ('audio', AudioChunk),
                                        ('tactile', TactileArray))}
        self.t0 = time.time_ns()
        self.k = 1

    def matched(self, names) -> bool:
        return all(self.pubs[n].get_subscription_count() > 0 for n in names)

    def step(self):
        from builtin_interfaces.msg import Time
        from sensor_msgs.msg import Image

        from llmos_ros.msg import AudioChunk, TactileArray

        def stamp(k):
            ns = self.t0 + k * 20_000_000
            return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)
        k = self.k
        chunk = AudioChunk(sample_rate=16000, channels=1)
        chunk.header.stamp, chunk.header.frame_id = stamp(k - 1), self.frames['audio']
        chunk.samples = (0.3 * np.sin(np.arange(320) * 0.5)).astype(np.float32)
        tac = TactileArray(rows=8, cols=8, channels=1)
        tac.header.stamp, tac.header.frame_id = stamp(k), self.frames['tactile']
        tac.values = np.linspace(0, 1, 64).astype(np.float32)
        image = Image(height=32, width=32, encoding='rgb8', step=96)
        image.header.stamp, image.header.frame_id = stamp(k), self.frames['camera']
        image.data = bytes(CAMERA_RGB) * (32 * 32)
        for name, msg in (('audio', chunk), ('tactile', tac), ('camera', image)):
            self.pubs[name].publish(msg)
        self.k += 1


def feed_until(node, executor, feeder, predicate, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        feeder.step()
        spin_until(node, lambda: False, 0.02, executor)
    return predicate()


def model_status(diagnostics) -> dict:
    for array in reversed(diagnostics):
        for status in array.status:
            if status.name.endswith(': model'):
                return {v.key: v.value for v in status.values}
    return {}


@pytest.fixture
def test_node(rclpy_context):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    node = Node('llmos_interop_test', context=rclpy_context)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    yield node, executor
    executor.shutdown()
    node.destroy_node()


def test_graph_arguments_become_remappings_and_overrides():
    from llmos_ros.nodes.graph import graph_from_arguments
    nodes = graph_from_arguments({'camera_topic': '/front/image_color',
                                  'camera_reliability': 'reliable', 'tactile_topic': 'skin',
                                  'namespace': 'robot1', 'start_camera': 'true'}, '/cfg')
    perception, camera = nodes
    args = perception.ros_arguments()
    assert ['-r', 'camera/image_raw:=/front/image_color'] == args[args.index('-r'):][:2]
    assert '-p' in args and \
        'qos_overrides./front/image_color.subscription.reliability:=reliable' in args
    assert 'tactile/array:=skin' in args
    assert camera.remappings == perception.remappings  # the driver publishes where it is read
    with pytest.raises(ValueError, match="camera_reliability is 'sometimes'"):
        graph_from_arguments({'camera_reliability': 'sometimes'}, '/cfg')
    with pytest.raises(ValueError, match='unknown launch arguments'):
        graph_from_arguments({'camera_topics': '/x'}, '/cfg')


def test_remapped_inputs_and_qos_compatibility(sim_model, test_node, rclpy_context):
    """
    Remapped inputs through the runner's graph; compatible and incompatible QoS.

    A reliable camera and a best-effort microphone feed the node; taxels overridden to reliable
    are incompatible with their best-effort publisher, which the node reports in /diagnostics
    and leaves out of the latent.
    """
    from diagnostic_msgs.msg import DiagnosticArray

    from llmos_ros.msg import LatentState
    from llmos_ros.nodes.runner import Runner, graph_from_arguments
    node, executor = test_node
    _, model = sim_model
    topics = {'camera': '/front/image_color', 'audio': '/head/mic', 'tactile': '/skin/taxels'}
    runner = Runner(graph_from_arguments({
        'model': str(model), 'camera_topic': topics['camera'], 'microphone_topic': topics['audio'],
        'tactile_topic': topics['tactile'], 'tactile_reliability': 'reliable'}),
        context=rclpy_context).start()
    latents, diagnostics = [], []
    node.create_subscription(LatentState, 'llmos/latent', latents.append, 50)
    node.create_subscription(DiagnosticArray, '/diagnostics', diagnostics.append, 10)
    feeder = Feeder(node, topics, {'camera': 'reliable', 'audio': 'best_effort',
                                   'tactile': 'best_effort'},
                    {'camera': 'cam', 'audio': 'mic', 'tactile': 'skin'})
    try:
        assert spin_until(node, lambda: feeder.matched(('camera', 'audio')), 30.0, executor)
        assert feed_until(node, executor, feeder, lambda: len(latents) >= 5 and any(
            'qos//skin/taxels/incompatible_qos' in model_status([d]) for d in diagnostics),
            40.0), (len(latents), model_status(diagnostics))
        perception = runner.nodes[0]
        assert perception.get_parameter(
            'qos_overrides./skin/taxels.subscription.reliability').value == 'reliable'
    finally:
        runner.stop()
    assert all({'camera', 'audio'} <= set(m.modalities) for m in latents[-3:])
    assert not any('tactile' in m.modalities for m in latents)
    status = [s for d in diagnostics for s in d.status if s.name.endswith(': model')][-1]
    assert status.level == b'\x01' and 'incompatible QoS' in status.message


def _start_perception(model, *params):
    args = ['--ros-args', '-p', f'model_path:={model}']
    for p in params:
        args += ['-p', p]
    return subprocess.Popen(python_cmd('llmos_ros.nodes.perception_node', *args),
                            env=python_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


class ParamClient:
    """rcl_interfaces parameter services of a remote node, over DDS."""

    def __init__(self, node, executor, target):
        from rcl_interfaces.srv import DescribeParameters, GetParameters, SetParameters
        self.node, self.executor = node, executor
        self.clients = {name: node.create_client(kind, f'/{target}/{name}')
                        for name, kind in (('set_parameters', SetParameters),
                                           ('get_parameters', GetParameters),
                                           ('describe_parameters', DescribeParameters))}
        for client in self.clients.values():
            assert spin_until(node, client.service_is_ready, 30.0, executor)

    def _call(self, name, request):
        future = self.clients[name].call_async(request)
        assert spin_until(self.node, future.done, 10.0, self.executor)
        return future.result()

    def set(self, name, value):
        """(successful, reason) of setting one parameter."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter
        result = self._call('set_parameters', SetParameters.Request(
            parameters=[Parameter(name, value=value).to_parameter_msg()])).results[0]
        return result.successful, result.reason

    def get(self, name):
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python
        value = self._call('get_parameters', GetParameters.Request(names=[name])).values[0]
        return parameter_value_to_python(value)

    def describe(self, name):
        from rcl_interfaces.srv import DescribeParameters
        return self._call('describe_parameters',
                          DescribeParameters.Request(names=[name])).descriptors[0]


def test_parameters_frames_and_debug_image(sim_model, test_node):
    """Runtime parameters applied or rejected with a reason; frame ids; the debug picture."""
    from sensor_msgs.msg import Image

    from llmos_ros.checkpoint import load_checkpoint
    from llmos_ros.core import debug_view
    from llmos_ros.msg import AudioChunk, LatentState, TactileArray
    node, executor = test_node
    _, model = sim_model
    names = list(load_checkpoint(model).cfg.modalities)
    latents, debug = [], []
    predictions = {'camera': [], 'audio': [], 'tactile': []}
    node.create_subscription(LatentState, 'llmos/latent', latents.append, 50)
    node.create_subscription(Image, 'llmos/debug_image', debug.append, 5)
    for name, kind in (('camera', Image), ('audio', AudioChunk), ('tactile', TactileArray)):
        node.create_subscription(kind, f'llmos/prediction/{name}', predictions[name].append, 10)
    feeder = Feeder(node, {'camera': 'camera/image_raw', 'audio': 'microphone/audio',
                           'tactile': 'tactile/array'},
                    dict.fromkeys(('camera', 'audio', 'tactile'), 'reliable'),
                    {'camera': 'cam_optical', 'audio': 'mic_link', 'tactile': 'skin_link'})
    perception = _start_perception(model, 'frame_id:=base_link', 'debug_image_rate_hz:=5.0')
    try:
        params = ParamClient(node, executor, 'llmos_perception')
        assert spin_until(node, lambda: feeder.matched(names), 30.0, executor)
        assert feed_until(node, executor, feeder, lambda: len(debug) >= 1 and all(
            predictions.values()) and latents, 40.0), (len(debug), len(latents))

        descriptor = params.describe('prediction_rate_hz')
        assert descriptor.description and descriptor.floating_point_range[0].to_value == 1000.0
        assert params.describe('autostart').read_only
        assert params.set('prediction_rate_hz', 2.5) == (True, '')
        assert params.get('prediction_rate_hz') == 2.5
        ok, reason = params.set('prediction_rate_hz', -1.0)
        assert not ok and 'range' in reason.lower(), reason
        ok, reason = params.set('model_path', '/elsewhere/model.pt')
        assert not ok and 'read at configure' in reason, reason
        assert params.get('model_path') == str(model)
        ok, reason = params.set('autostart', False)
        assert not ok and 'read-only' in reason, reason
        assert params.set('frame_id', 'odom') == (True, '')  # the latent frame, live
        assert feed_until(node, executor, feeder,
                          lambda: latents[-1].header.frame_id == 'odom', 20.0)
    finally:
        perception.terminate()
        log = perception.communicate(timeout=20)[0]
    assert 'Traceback' not in log, log
    assert 'prediction_rate_hz=2.5' in log  # applied, and said so
    frames = [m.header.frame_id for m in latents]  # base_link until the switch, then odom
    switch = frames.index('odom')
    assert switch >= 1 and set(frames[:switch]) == {'base_link'} and set(frames[switch:]) == {
        'odom'}, frames
    assert predictions['camera'][-1].header.frame_id == 'cam_optical'
    assert predictions['audio'][-1].header.frame_id == 'mic_link'
    assert predictions['tactile'][-1].header.frame_id == 'skin_link'

    picture = debug[-1]
    assert picture.encoding == 'rgb8'
    assert picture.height == debug_view.HEADER + len(names) * (debug_view.TILE + debug_view.GAP)
    pixels = np.frombuffer(bytes(picture.data), np.uint8).reshape(picture.height,
                                                                  picture.width, 3)
    x, y = debug_view.tile_origin(names.index('camera'), 0)
    half = debug_view.TILE // 2
    assert tuple(pixels[y + half, x + half]) == CAMERA_RGB  # the input, where documented
    x, y = debug_view.tile_origin(names.index('tactile'), 0)
    taxels = pixels[y:y + debug_view.TILE, x:x + debug_view.TILE].astype(int)
    assert taxels[-1, -1, 0] > taxels[0, 0, 0]  # heat map: last taxel (1.0) redder than 0
    x, y = debug_view.tile_origin(names.index('audio'), 0)
    assert pixels[y:y + debug_view.TILE, x:x + debug_view.TILE].std() > 5  # a spectrogram
    assert pixels[:debug_view.HEADER].max() == 255  # the header text


@pytest.mark.slow
def test_demo_records_an_mcap_bag(sim_model, tmp_path):
    """llmos-demo --record: inputs, latents, predictions and debug images in one MCAP bag."""
    import os

    from llmos_ros.core.bags import bag_info
    bag, model = sim_model
    work = tmp_path / 'work'
    work.mkdir()
    os.symlink(bag, work / 'sim_bag')  # the demo reuses a bag and model it finds
    os.symlink(model, work / 'model.pt')
    record = tmp_path / 'rec'
    out = subprocess.run(python_cmd('llmos_ros.nodes.demo', '--workdir', str(work),
                                    '--duration', '6', '--record', str(record)),
                         env=python_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert list(record.glob('*.mcap')), list(record.iterdir())
    counts = bag_info(record)['counts']
    for topic in ('/camera/image_raw', '/microphone/audio', '/tactile/array', '/llmos/latent',
                  '/llmos/prediction/camera', '/llmos/debug_image'):
        assert counts.get(topic, 0) > 0, (topic, counts)
    again = subprocess.run(python_cmd('llmos_ros.nodes.demo', '--workdir', str(work),
                                      '--duration', '1', '--record', str(record)),
                           env=python_env(), capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and 'exists already' in again.stderr


def test_reconfigure_keeps_qos_overrides(sim_model, rclpy_context):
    """Configure/activate re-create the interfaces: QoS override parameters declared once."""
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from llmos_ros.nodes.perception_node import PerceptionNode
    _, model = sim_model
    node = PerceptionNode(context=rclpy_context, cli_args=[
        '--ros-args', '-p', f'model_path:={model}', '-p', 'autostart:=false',
        '-p', 'qos_overrides./llmos/latent.publisher.depth:=3',
        '-p', 'qos_overrides./camera/image_raw.subscription.reliability:=reliable'])
    try:
        for modalities in ('', 'camera'):
            assert node.set_parameters([Parameter('modalities', value=modalities)])[0].successful
            assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
            assert node._latent_pub.qos_profile.depth == 3
            assert node._subs == []  # subscribed at activate
            for _ in range(2):  # subscriptions are made at each activate
                assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
                camera = [s for s in node._subs if s.topic_name == '/camera/image_raw'][0]
                assert camera.qos_profile.reliability.name == 'RELIABLE'
                assert len(node._subs) == (1 if modalities else 3)
                assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
                assert node._subs == []
            refused = node.set_parameters([Parameter('modalities', value='audio')])[0]
            assert not refused.successful and 'clean up' in refused.reason
            assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    finally:
        node.destroy_node()


def test_params_files_match_the_declared_parameters():
    """config/*.yaml names exactly the declared parameters; each has a description."""
    from helpers import ROOT
    import yaml

    from llmos_ros.nodes import camera_node, microphone_node, perception_node
    for name, module in (('perception', perception_node), ('camera', camera_node),
                         ('microphone', microphone_node)):
        params = yaml.safe_load((ROOT / 'config' / f'{name}.yaml').read_text())
        declared = set(module.PARAMETERS)
        if name == 'perception':  # the belief's parameters are declared beside (belief.<name>)
            declared |= {'publish_belief', 'belief'}
            assert set(params['/**']['ros__parameters']['belief']) == set(
                module.BELIEF_PARAMETERS)
        assert set(params['/**']['ros__parameters']) == declared, name
        assert all(p.description for p in module.PARAMETERS.values()), name
