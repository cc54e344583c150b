"""Helpers shared by tests: environments for subprocesses, waiting on real DDS."""
import os
from pathlib import Path
import subprocess
import sys
import time

ROOT = Path(__file__).resolve().parents[1]


def python_env(**extra: str) -> dict:
    """Environment for a child Python process: this checkout first on sys.path, same DDS domain."""
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([str(ROOT), env.get('PYTHONPATH', '')]).rstrip(os.pathsep)
    env['PYTHONUNBUFFERED'] = '1'
    env.update(extra)
    return env


def python_cmd(module: str, *args: str) -> list:
    """Command line that runs `python -m module args...` with this interpreter."""
    return [sys.executable, '-m', module, *args]


def spin_until(node, predicate, timeout_s: float, executor=None) -> bool:
    """Spin `node` (or the executor) until predicate() is true or the timeout passes."""
    import rclpy
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        if executor is not None:
            executor.spin_once(timeout_sec=0.05)
        else:
            rclpy.spin_once(node, timeout_sec=0.05, executor=None)
    return predicate()


def stamp_ns(stamp) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def start_node(module: str, *ros_args: str) -> subprocess.Popen:
    """`python -m module --ros-args ...` in the test environment, output captured."""
    return subprocess.Popen(python_cmd(module, '--ros-args', *ros_args), env=python_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop_nodes(*procs: subprocess.Popen) -> list[str]:
    """SIGTERM each process (SIGKILL after 15 s); their outputs."""
    out = []
    for proc in procs:
        proc.terminate()
        try:
            out.append(proc.communicate(timeout=15)[0])
        except subprocess.TimeoutExpired:
            proc.kill()
            out.append(proc.communicate()[0])
    return out
