"""Configure abuse over real DDS: the node stays up, unconfigured, and says why."""
import subprocess

from helpers import python_cmd, python_env, spin_until
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
])
def test_bad_parameters_are_rejected_with_the_reason(values, match):
    from llmos_ros.errors import ConfigError
    from llmos_ros.nodes.perception_node import check_parameters
    good = {'device': 'cpu', 'camera_transport': 'raw', 'slop_s': -1.0, 'max_wait_s': -1.0,
            'max_age_s': -1.0, 'diagnostics_period_s': 1.0, 'prediction_rate_hz': 10.0,
            'audio_prediction_iterations': 4}
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


@pytest.mark.parametrize('params, reason', [
    (['-p', 'device:=cuda:9'], "device 'cuda:9'"),
    (['-p', 'modalities:=camera,sonar'], "modalities ['sonar'] are not in the model"),
    (['-p', 'max_wait_s:=5.0'], 'sync.jump_s must be > 0 and > sync.max_wait_s'),
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
