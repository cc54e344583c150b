"""
Embedded runner: the launch file's node graph in one process, on one rclpy executor.

For machines without `launch` / `ros2 launch`. Takes the launch file's arguments:
    python -m llmos_ros.nodes.runner model:=/path/model.pt start_sim:=true [duration:=30]
"""
from __future__ import annotations

import importlib
import sys
import time

from llmos_ros.errors import LlmosError
from llmos_ros.nodes import graph as node_graph
from llmos_ros.nodes.graph import NodeSpec
from llmos_ros.nodes.runtime import config_dir, use_dds_profile

ARGUMENTS = (*node_graph.ARGUMENTS, 'duration')


def graph_from_arguments(values: dict[str, str]) -> list[NodeSpec]:
    """The same graph perception.launch.py builds from the same arguments."""
    return node_graph.graph_from_arguments(
        {k: v for k, v in values.items() if k != 'duration'}, config_dir())


def build_nodes(graph: list[NodeSpec], namespace: str = '', context=None) -> list:
    """Instantiate every node of the graph with the arguments a launch file would give it."""
    nodes = []
    for spec in graph:
        cls = getattr(importlib.import_module(spec.module), spec.node_class)
        cli = ['--ros-args', '-r', f'__node:={spec.name}', *spec.ros_arguments()]
        nodes.append(cls(cli_args=cli, namespace=namespace, context=context))
    return nodes


class Runner:
    """Nodes of a graph spinning on a multi-threaded executor in a background thread."""

    def __init__(self, graph: list[NodeSpec], namespace: str = '', context=None):
        import threading

        from rclpy.executors import SingleThreadedExecutor
        self.nodes = build_nodes(graph, namespace, context)
        # One executor thread is enough: the nodes do their heavy work in their own threads
        # (capture, pacing, inference), and rclpy's multi-threaded executor costs more in
        # Python overhead than it gains under the GIL.
        self.executor = SingleThreadedExecutor(context=context)
        for node in self.nodes:
            self.executor.add_node(node)
        self._thread = threading.Thread(target=self._spin, daemon=True, name='llmos_runner')

    def _spin(self):
        import rclpy
        from rclpy.executors import ExternalShutdownException
        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass
        except Exception:
            if rclpy.ok(context=self.executor.context):
                raise  # a real failure; otherwise the context was shut down under us

    def start(self) -> Runner:
        self._thread.start()
        return self

    def stop(self):
        self.executor.shutdown(timeout_sec=5.0)
        for node in self.nodes:
            node.destroy_node()
        self._thread.join(timeout=5.0)


def parse_arguments(argv: list[str]) -> dict[str, str]:
    values = {}
    for arg in argv:
        name, sep, value = arg.partition(':=')
        if not sep or name not in ARGUMENTS:
            raise LlmosError(f'unknown argument {arg!r}; expected name:=value with name in '
                             f'{", ".join(ARGUMENTS)}')
        values[name] = value
    return values


def main(argv=None):
    import rclpy
    argv = sys.argv[1:] if argv is None else argv
    try:
        values = parse_arguments(argv)
        nodes = graph_from_arguments(values)
    except (LlmosError, ValueError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    use_dds_profile()
    rclpy.init(args=['llmos_runner'])
    runner = Runner(nodes, values.get('namespace', '')).start()
    duration = float(values.get('duration', 'inf'))
    try:
        end = time.monotonic() + duration
        while rclpy.ok() and time.monotonic() < end:
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    finally:
        unconfigured = [n.get_name() for n in runner.nodes
                        if getattr(n, 'configured', True) is False]
        runner.stop()
        rclpy.try_shutdown()
    if unconfigured:  # the reason was logged when configure failed
        print(f'error: {", ".join(unconfigured)} never configured; nothing was published',
              file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
