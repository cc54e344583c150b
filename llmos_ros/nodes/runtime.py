"""
`run_node`: the main() of every llmos_ros node.

rclpy init with the command line's ROS arguments, spin, and a clean exit: Ctrl-C (SIGINT) and
SIGTERM stop the node and exit 0; a user error (LlmosError, a bad parameter value or type) is
logged as one line, without a traceback, and exits 1; the node's destroy_node() always runs, so
capture threads and devices are released.
"""
from __future__ import annotations

import sys

from llmos_ros.errors import LlmosError

EXIT_OK = 0
EXIT_USER_ERROR = 1


def run_node(node_cls, args=None, *, multithreaded: bool = False, num_threads: int | None = None,
             logger_name: str | None = None) -> int:
    """
    Construct `node_cls()` and spin it until shutdown; return the process exit status.

    `args` is the command line (None: sys.argv). With `multithreaded`, a MultiThreadedExecutor
    (`num_threads`, default: CPU count) runs callbacks in parallel; otherwise a
    SingleThreadedExecutor. Nodes that need their own threads (capture loops) start them in the
    constructor and stop them in destroy_node().
    """
    import rclpy
    from rclpy.exceptions import ParameterException
    from rclpy.executors import (
        ExternalShutdownException,
        MultiThreadedExecutor,
        SingleThreadedExecutor,
    )
    logger = rclpy.logging.get_logger(logger_name or _default_name(node_cls))
    try:
        rclpy.init(args=args)
    except Exception as exc:  # malformed --ros-args: rclpy raises its own RCLError
        print(f'error: {exc}', file=sys.stderr)
        return EXIT_USER_ERROR
    node = None
    code = EXIT_OK
    try:
        node = node_cls()
        logger = node.get_logger()
        executor = (MultiThreadedExecutor(num_threads=num_threads) if multithreaded
                    else SingleThreadedExecutor())
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (LlmosError, ParameterException) as exc:
        logger.error(str(exc))
        code = EXIT_USER_ERROR
    except Exception:
        if rclpy.ok():
            raise
        # SIGINT/SIGTERM shut the context down while the executor was between two steps (rclpy
        # then raises RCLError 'context is not valid' instead of ExternalShutdownException)
    finally:
        if node is not None:
            try:
                node.destroy_node()
            except Exception as exc:  # never hide the real exit reason behind a cleanup error
                logger.warning(f'while shutting down: {exc}')
        rclpy.try_shutdown()
    return code


def declare_parameters(node, defaults: dict, dynamic: tuple[str, ...] = ()) -> dict:
    """
    Declare every parameter with its default and return their values.

    Names in `dynamic` accept any type (e.g. a device given as an index or as a name).
    """
    from rcl_interfaces.msg import ParameterDescriptor
    for name, default in defaults.items():
        node.declare_parameter(name, default,
                               ParameterDescriptor(dynamic_typing=name in dynamic))
    return {name: node.get_parameter(name).value for name in defaults}


def _default_name(node_cls) -> str:
    name = getattr(node_cls, 'NODE_NAME', None) or node_cls.__name__
    return str(name)
