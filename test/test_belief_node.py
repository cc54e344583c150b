"""perception_node's llmos/belief and llmos/surprise over real DDS, with a silent sensor."""
import shutil

from helpers import spin_until, stamp_ns, start_node, stop_nodes
import numpy as np
import pytest

pytestmark = pytest.mark.ros


_ns, _start, _stop = stamp_ns, start_node, stop_nodes


def _disable_tactile(node, executor):
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    client = node.create_client(SetParameters, '/llmos_sim_source/set_parameters')
    assert spin_until(node, client.service_is_ready, 20.0, executor)
    future = client.call_async(SetParameters.Request(parameters=[Parameter(
        name='enable_tactile', value=ParameterValue(type=ParameterType.PARAMETER_BOOL,
                                                    bool_value=False))]))
    assert spin_until(node, future.done, 10.0, executor)
    assert future.result().results[0].successful


@pytest.fixture
def calibrated(sim_model, tmp_path):
    """A copy of the sim model with its surprise calibration sidecar."""
    from llmos_ros.surprise import main as calibrate_main
    bag, model = sim_model
    path = tmp_path / 'model.pt'
    shutil.copy(model, path)
    assert calibrate_main(['--model', str(path), '--bag', str(bag)]) == 0
    return path


def test_belief_and_surprise_topics_with_a_silent_sensor(calibrated, rclpy_context):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from llmos_ros.msg import LatentState, Surprise
    node = Node('llmos_test_belief', context=rclpy_context)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    latents, beliefs, surprises = [], [], []
    node.create_subscription(LatentState, 'llmos/latent', latents.append, 100)
    node.create_subscription(LatentState, 'llmos/belief', beliefs.append, 100)
    node.create_subscription(Surprise, 'llmos/surprise', surprises.append, 100)
    perception = _start('llmos_ros.nodes.perception_node', '-p', f'model_path:={calibrated}',
                        '-p', 'publish_predictions:=false', '-p', 'belief.max_age_s:=0.6')
    sim = _start('llmos_ros.nodes.sim_source_node')
    try:
        assert spin_until(node, lambda: len(beliefs) >= 20 and len(surprises) >= 20, 60.0,
                          executor), 'no belief or surprise'
        _disable_tactile(node, executor)
        off = len(beliefs)

        def faded():  # tactile first kept at a reduced weight, later gone (hard limit)
            later = beliefs[off:]
            return any('tactile' not in m.modalities for m in later)
        assert spin_until(node, faded, 20.0, executor)
    finally:
        logs = _stop(sim, perception)
        executor.shutdown()
        node.destroy_node()
    assert 'Traceback' not in ''.join(logs), logs
    # llmos-train learned the belief noise of the model: the node uses it (no 0.05 fallback)
    assert 'belief noise: learned per dimension' in ''.join(logs), logs
    assert 'surprise: alarms at p < 0.01 on each of 5 parts' in ''.join(logs), logs  # the check
    latent_stamps = {_ns(m.header.stamp) for m in latents}
    for msg in beliefs:
        assert _ns(msg.header.stamp) in latent_stamps  # input stamps, one belief per latent
        n = len(msg.modalities)
        assert len(msg.modality_stamps) == len(msg.modality_ages) == len(msg.modality_weights) == n
        assert all(0 < w <= 1 for w in msg.modality_weights)
        assert np.all(np.asarray(msg.std) > 0) and len(msg.mean) == len(msg.std)
    for msg in surprises:
        assert _ns(msg.header.stamp) in latent_stamps
        assert len(msg.scores) == len(msg.tail_probabilities) == len(msg.modalities) > 0
        assert all(0 < p <= 1 for p in msg.tail_probabilities)  # calibrated
        assert all(s >= 0 for s in msg.scores)
    # after the switch: tactile down-weighted while its last expert ages, then dropped, and the
    # belief's std over tactile's private latent grows while nothing is heard from it
    after = beliefs[off:]
    stale = [m.modality_weights[list(m.modalities).index('tactile')] for m in after
             if 'tactile' in m.modalities]
    assert any(w < 1 for w in stale), stale
    gone = [i for i, m in enumerate(after) if 'tactile' not in m.modalities]
    msg = after[gone[0]]
    i = list(msg.private_modalities).index('tactile')
    start = msg.shared_dim + i * msg.private_dim
    stds = [float(np.mean(m.std[start:start + msg.private_dim])) for m in after[gone[0]:]]
    assert all(b >= a - 1e-6 for a, b in zip(stds, stds[1:])), stds
    assert all(list(m.modality_weights) == [1.0] * len(m.modalities) for m in latents)
