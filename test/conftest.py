"""Shared test set-up: real DDS limited to this machine, a distinct domain id per test run."""
import atexit
import os
from pathlib import Path
import shutil
import sys
import tempfile

import pytest

ROOT = Path(__file__).resolve().parents[1]
# A distinct domain per run so parallel runs on one machine never see each other.
os.environ.setdefault('ROS_DOMAIN_ID', str(100 + os.getpid() % 100))
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
# llmos-eval's classifier cache in a folder of this run (removed at exit), never ~/.cache
os.environ['LLMOS_CACHE_DIR'] = tempfile.mkdtemp(prefix='llmos_test_cache_')
atexit.register(shutil.rmtree, os.environ['LLMOS_CACHE_DIR'], True)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _have_ros() -> bool:
    try:
        import rclpy  # noqa: F401

        from llmos_ros.msg import LatentState  # noqa: F401
    except ImportError:
        return False
    return True


def pytest_collection_modifyitems(config, items):
    """Tests marked `ros` need rclpy and the built messages: source scripts/env.sh first."""
    if _have_ros():
        return
    if os.environ.get('CI'):
        raise pytest.UsageError('rclpy or the built llmos_ros messages are missing in CI; '
                                'run scripts/test.sh, which builds them')
    skip = pytest.mark.skip(reason='rclpy / built messages not available: source scripts/env.sh')
    for item in items:
        if 'ros' in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rclpy_context():
    """An initialised rclpy context, shut down after the test."""
    import rclpy
    context = rclpy.context.Context()
    rclpy.init(context=context)
    yield context
    rclpy.shutdown(context=context)


@pytest.fixture(scope='session')
def sim_model(tmp_path_factory):
    """A tiny model trained a few steps on a short simulated bag: (bag path, model path)."""
    from llmos_ros.sim.make_bag import write_bag
    from llmos_ros.train import main as train_main
    root = tmp_path_factory.mktemp('sim_model')
    bag, model = root / 'bag', root / 'model.pt'
    write_bag(bag, 8.0, seed=3, progress=False)
    assert train_main(['--bag', str(bag), '--out', str(model), '--steps', '20', '--quiet']) == 0
    return bag, model


@pytest.fixture
def restore_torch_globals():
    """train() switches on deterministic algorithms and sets threads: undo for other tests."""
    import torch
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    yield
    torch.use_deterministic_algorithms(deterministic)
    torch.set_num_threads(threads)
