"""The built messages cross a process boundary over real DDS unchanged."""
import subprocess
import sys

from helpers import ROOT, python_env, spin_until
import numpy as np
import pytest

pytestmark = pytest.mark.ros


def _messages():
    from builtin_interfaces.msg import Time

    from llmos_ros.msg import AudioChunk, LatentState, TactileArray
    latent = LatentState()
    latent.header.stamp = Time(sec=1704067200, nanosec=123456789)
    latent.header.frame_id = 'llmos'
    latent.model_id = 'abc123'
    latent.fusion = 'mmvae_plus'
    latent.mean = np.linspace(-1, 1, 40, dtype=np.float32)
    latent.std = np.full(40, 0.5, np.float32)
    latent.shared_dim = 32
    latent.private_dim = 4
    latent.private_modalities = ['camera', 'audio']
    latent.modalities = ['camera', 'audio']
    latent.modality_stamps = [Time(sec=1704067200, nanosec=100), Time(sec=1704067199, nanosec=7)]
    audio = AudioChunk()
    audio.header.stamp = Time(sec=5, nanosec=6)
    audio.header.frame_id = 'microphone'
    audio.sample_rate = 44100
    audio.channels = 2
    audio.samples = np.random.default_rng(0).uniform(-1, 1, 882).astype(np.float32)
    tactile = TactileArray()
    tactile.header.frame_id = 'skin'
    tactile.rows, tactile.cols, tactile.channels = 4, 3, 3
    tactile.values = np.arange(36, dtype=np.float32)
    return {'latent': latent, 'audio': audio, 'tactile': tactile}


def test_messages_round_trip_between_processes(rclpy_context):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    sent = _messages()
    child = subprocess.Popen([sys.executable, str(ROOT / 'test' / 'echo_node.py')],
                             env=python_env(), stdout=subprocess.DEVNULL)
    node = Node('llmos_dds_test', context=rclpy_context)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    received = {}
    try:
        pubs = {}
        for name, msg in sent.items():
            pubs[name] = node.create_publisher(type(msg), f'echo_in/{name}', 10)
            node.create_subscription(type(msg), f'echo_out/{name}',
                                     lambda m, name=name: received.setdefault(name, m), 10)
        assert spin_until(node, lambda: all(p.get_subscription_count() > 0
                                            for p in pubs.values()), 20.0, executor)
        assert spin_until(node, lambda: all(node.count_publishers(f'echo_out/{n}') > 0
                                            for n in sent), 20.0, executor)
        for _ in range(50):  # until the echo's publishers have matched our subscriptions
            for name, msg in sent.items():
                if name not in received:
                    pubs[name].publish(msg)
            if spin_until(node, lambda: len(received) == len(sent), 0.2, executor):
                break
        assert set(received) == set(sent)
        for name, msg in sent.items():
            assert received[name] == msg, name
    finally:
        executor.shutdown()
        node.destroy_node()
        child.terminate()
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:  # a slow exit is not what this test checks
            child.kill()
            child.wait()
    assert rclpy.ok(context=rclpy_context)
