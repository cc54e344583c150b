"""Helpers shared by tests: environments for subprocesses, waiting on real DDS."""
import os
from pathlib import Path
import signal
import subprocess
import sys
import time

ROOT = Path(__file__).resolve().parents[1]


def python_env(**extra: str) -> dict:
    """Environment for a child Python process: this checkout first on sys.path, same DDS domain."""
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([str(ROOT), env.get('PYTHONPATH', '')]).rstrip(os.pathsep)
    env['PYTHONUNBUFFERED'] = '1'
    env['PYTHONFAULTHANDLER'] = '1'  # a child stopped with SIGABRT prints every thread's stack
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
    """
    SIGTERM each process; their outputs.

    One still running 15 s later gets SIGABRT, so its output ends with the Python stack of
    every thread (PYTHONFAULTHANDLER, `python_env`) and a test failure shows where it hung;
    SIGKILL if even that does not end it.
    """
    out = []
    for proc in procs:
        proc.terminate()
        try:
            out.append(proc.communicate(timeout=15)[0])
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            try:
                out.append(proc.communicate(timeout=5)[0])
            except subprocess.TimeoutExpired:
                proc.kill()
                out.append(proc.communicate()[0])
    return out
