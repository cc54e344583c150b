"""
perception_node's lifecycle as a lifecycle manager drives it: `<node>/change_state` over DDS.

configure makes the publishers (no subscriptions), activate subscribes and publishes from
fresh buffers, deactivate unsubscribes and silences the node, cleanup frees the model and the
publishers, shutdown works from every state.
"""
import time

from helpers import spin_until, start_node, stop_nodes
import pytest
from test_robustness_node import Feed

pytestmark = pytest.mark.ros

NODE = 'llmos_perception'


class Lifecycle:
    """Client of a lifecycle node's change_state / get_state services."""

    def __init__(self, node, executor, target: str):
        from lifecycle_msgs.srv import ChangeState, GetState
        self.node, self.executor = node, executor
        self.change = node.create_client(ChangeState, f'/{target}/change_state')
        self.get = node.create_client(GetState, f'/{target}/get_state')
        assert spin_until(node, lambda: self.change.service_is_ready()
                          and self.get.service_is_ready(), 40.0, executor), 'no lifecycle services'

    def _call(self, client, request):
        future = client.call_async(request)
        assert spin_until(self.node, future.done, 30.0, self.executor), 'no service response'
        return future.result()

    def state(self) -> str:
        from lifecycle_msgs.srv import GetState
        return self._call(self.get, GetState.Request()).current_state.label

    def transition(self, transition_id: int, expect: str) -> None:
        """Trigger a transition; it must succeed and end in the state `expect`."""
        from lifecycle_msgs.srv import ChangeState
        request = ChangeState.Request()
        request.transition.id = transition_id
        assert self._call(self.change, request).success, f'transition {transition_id} failed'
        assert self.state() == expect


def _set_bool(node, executor, target: str, name: str, value: bool) -> bool:
    """Set a bool parameter of `target` over its service; whether the node accepted it."""
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    client = node.create_client(SetParameters, f'/{target}/set_parameters')
    assert spin_until(node, client.service_is_ready, 20.0, executor)
    future = client.call_async(SetParameters.Request(parameters=[Parameter(
        name=name, value=ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value))]))
    assert spin_until(node, future.done, 10.0, executor)
    node.destroy_client(client)
    return future.result().results[0].successful


def _subscribed(feed) -> list[int]:
    """perception_node's subscriptions to each input, as the publishers see them."""
    return [p.get_subscription_count() for p in feed.pubs.values()]


def _received(feed, name: str) -> int:
    """Messages of input `name` perception_node counted (its /diagnostics), -1 before any."""
    return int(feed.inputs.get(name, {}).get('received', -1))


def test_transitions_over_dds(sim_model, rclpy_context):
    from lifecycle_msgs.msg import Transition
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    _, model = sim_model
    node = Node('llmos_test_lifecycle', context=rclpy_context)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    feed = Feed(node, executor, base_ns=time.time_ns())
    proc = start_node('llmos_ros.nodes.perception_node', '-p', f'model_path:={model}',
                      '-p', 'autostart:=false', '-p', 'diagnostics_period_s:=0.2',
                      '-p', 'publish_predictions:=false')

    def settle(seconds):
        spin_until(node, lambda: False, seconds, executor)

    try:
        life = Lifecycle(node, executor, NODE)
        assert life.state() == 'unconfigured'

        # configure: the model is loaded and the publishers exist, nothing is subscribed
        life.transition(Transition.TRANSITION_CONFIGURE, 'inactive')
        assert spin_until(node, lambda: node.count_publishers('/llmos/latent') == 1, 20.0,
                          executor)
        settle(1.0)
        assert _subscribed(feed) == [0, 0, 0]
        assert not _set_bool(node, executor, NODE, 'publish_predictions', False), \
            'a configure-time parameter must be refused while configured'

        # activate: subscribed, latents flow
        life.transition(Transition.TRANSITION_ACTIVATE, 'active')
        assert spin_until(node, lambda: min(_subscribed(feed)) > 0, 20.0, executor)
        feed.recovers('activate')

        # a camera frame ahead of the other inputs waits in the pairing when deactivated
        settle(0.6)
        before = _received(feed, 'camera')
        stale_ns = feed.now_ns() + 60_000_000
        feed.pubs['camera'].publish(feed.image(stale_ns))
        assert spin_until(node, lambda: _received(feed, 'camera') > before, 20.0, executor), \
            'the pending camera frame never arrived'

        # deactivate: unsubscribed and silent, whatever is published meanwhile
        life.transition(Transition.TRANSITION_DEACTIVATE, 'inactive')
        assert spin_until(node, lambda: _subscribed(feed) == [0, 0, 0], 20.0, executor), \
            f'still subscribed after deactivate: {_subscribed(feed)}'
        settle(0.5)
        silent_from = len(feed.latents)
        feed.run_until(lambda: False, timeout_s=0.6)  # within sync.jump_s of the stale frame
        settle(0.5)
        assert len(feed.latents) == silent_from, 'an inactive node published'
        assert node.count_publishers('/llmos/latent') == 1  # configured: the publisher stays

        # activate again: only samples of frames sent from now on, none from before
        fresh_ns = feed.now_ns()
        life.transition(Transition.TRANSITION_ACTIVATE, 'active')
        assert spin_until(node, lambda: min(_subscribed(feed)) > 0, 20.0, executor)
        feed.recovers('reactivate')
        stamps = [t for t, _ in feed.latents[silent_from:]]
        assert stale_ns not in stamps, \
            f'a sample from before the deactivate was published ({(fresh_ns - stale_ns) / 1e9} s)'
        assert min(stamps) > fresh_ns, (min(stamps), fresh_ns)

        # cleanup: model and publishers gone, configure-time parameters settable again
        life.transition(Transition.TRANSITION_DEACTIVATE, 'inactive')
        life.transition(Transition.TRANSITION_CLEANUP, 'unconfigured')
        assert spin_until(node, lambda: node.count_publishers('/llmos/latent') == 0, 20.0,
                          executor), 'publishers survive cleanup'
        assert _set_bool(node, executor, NODE, 'publish_predictions', False)

        # configure and activate again: works as the first time
        life.transition(Transition.TRANSITION_CONFIGURE, 'inactive')
        life.transition(Transition.TRANSITION_ACTIVATE, 'active')
        assert spin_until(node, lambda: min(_subscribed(feed)) > 0, 20.0, executor)
        feed.recovers('cleanup and configure')

        # shutdown from active: nothing left
        life.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN, 'finalized')
        assert spin_until(node, lambda: _subscribed(feed) == [0, 0, 0]
                          and node.count_publishers('/llmos/latent') == 0, 20.0, executor)
    finally:
        logs = stop_nodes(proc)
        executor.shutdown()
        node.destroy_node()
    assert proc.returncode == 0, logs[0]
    assert 'Traceback' not in logs[0], logs[0]


@pytest.mark.parametrize('steps', [(), ('configure',)], ids=['unconfigured', 'inactive'])
def test_shutdown_from_every_state(sim_model, rclpy_context, steps):
    """Shutdown from unconfigured and inactive (active: above) frees everything."""
    from rclpy.lifecycle import TransitionCallbackReturn

    from llmos_ros.nodes.perception_node import PerceptionNode
    _, model = sim_model
    node = PerceptionNode(context=rclpy_context, cli_args=[
        '--ros-args', '-p', f'model_path:={model}', '-p', 'autostart:=false'])
    try:
        for step in steps:
            assert getattr(node, f'trigger_{step}')() == TransitionCallbackReturn.SUCCESS
        if steps:
            assert node.engine is not None and node.count_publishers('/llmos/latent') == 1
        assert node.trigger_shutdown() == TransitionCallbackReturn.SUCCESS  # -> finalized
        assert node.engine is None
        assert node.count_publishers('/llmos/latent') == 0
        assert node.count_subscribers('/camera/image_raw') == 0
    finally:
        node.destroy_node()


def test_configure_sets_the_torch_threads(sim_model, rclpy_context):
    """torch_threads (default 1) sets torch's and numpy's BLAS threads; 0 leaves them as were."""
    from threadpoolctl import threadpool_info, threadpool_limits
    import torch

    from llmos_ros.nodes.perception_node import PerceptionNode
    _, model = sim_model

    def blas_threads():
        return {pool['num_threads'] for pool in threadpool_info() if pool['user_api'] == 'blas'}

    before, blas_before = torch.get_num_threads(), threadpool_limits(None, user_api='blas')
    assert blas_threads(), 'numpy has no BLAS pool that threadpoolctl sees'
    try:
        for value, want in (('1', 1), ('0', 2)):
            torch.set_num_threads(2)
            threadpool_limits(2, user_api='blas')
            node = PerceptionNode(context=rclpy_context, cli_args=[
                '--ros-args', '-p', f'model_path:={model}', '-p', 'autostart:=false',
                '-p', f'torch_threads:={value}'])
            try:
                node.trigger_configure()
                assert node.engine is not None
                assert torch.get_num_threads() == want
                assert blas_threads() == {want}
            finally:
                node.trigger_shutdown()
                node.destroy_node()
    finally:
        torch.set_num_threads(before)
        blas_before.restore_original_limits()
