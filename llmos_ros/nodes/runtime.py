"""
`run_node`: the main() of every llmos_ros node.

rclpy init with the command line's ROS arguments, spin, and a clean exit: Ctrl-C (SIGINT) and
SIGTERM stop the node and exit 0; a user error (LlmosError, a bad parameter value or type) is
logged as one line, without a traceback, and exits 1; the node's destroy_node() always runs, so
capture threads and devices are released.
"""
from __future__ import annotations

from dataclasses import dataclass
import os
import sys
from typing import Any

from llmos_ros.errors import LlmosError

EXIT_OK = 0
EXIT_USER_ERROR = 1
DDS_PROFILE_VARS = ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE')


def config_dir() -> str:
    """config/ of the installed package share folder, else of this source checkout."""
    try:
        from ament_index_python.packages import get_package_share_directory
        return os.path.join(get_package_share_directory('llmos_ros'), 'config')
    except (ImportError, LookupError, ValueError):
        return os.path.join(os.path.dirname(__file__), '..', '..', 'config')


def use_dds_profile() -> str:
    """
    Point Fast DDS at config/fastdds.xml unless the user chose a profile; call before rclpy.init.

    The file enlarges the shared-memory segment and socket buffers so large images arrive (see
    the file). Returns the profile in effect ('' with another RMW than Fast DDS).
    """
    for var in DDS_PROFILE_VARS:
        if os.environ.get(var):
            return os.environ[var]
    if os.environ.get('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp') not in (
            'rmw_fastrtps_cpp', 'rmw_fastrtps_dynamic_cpp'):
        return ''
    here = os.path.join(os.path.dirname(__file__), '..', '..', 'config')
    for folder in (config_dir(), here):
        path = os.path.realpath(os.path.join(folder, 'fastdds.xml'))
        if os.path.isfile(path):
            os.environ[DDS_PROFILE_VARS[0]] = path
            return path
    return ''


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
    use_dds_profile()
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


@dataclass(frozen=True)
class Param:
    """
    A ROS parameter: default, description and the constraints its descriptor carries.

    `range` (min, max) becomes an integer or floating-point range (rclpy then rejects values
    outside it, at start-up and at runtime, naming the parameter); `read_only` parameters are read
    once at start (a runtime change is rejected as read-only); `dynamic` accepts any type (e.g. a
    device given as an index or as a name); `constraints` is the descriptor's free text.
    """

    default: Any
    description: str
    range: tuple | None = None
    read_only: bool = True
    dynamic: bool = False
    constraints: str = ''


def descriptor(spec: Param):
    """The rcl_interfaces ParameterDescriptor of a Param."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
    desc = ParameterDescriptor(description=spec.description, read_only=spec.read_only,
                               dynamic_typing=spec.dynamic,
                               additional_constraints=spec.constraints)
    if spec.range is not None:
        low, high = spec.range
        if isinstance(spec.default, bool) or not isinstance(spec.default, (int, float)):
            raise TypeError(f'a range needs a numeric default, not {spec.default!r}')
        if isinstance(spec.default, int):
            desc.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=0)]
        else:
            desc.floating_point_range = [FloatingPointRange(from_value=float(low),
                                                            to_value=float(high), step=0.0)]
    return desc


def declare_parameters(node, specs: dict[str, Param]) -> dict:
    """Declare every parameter with its default and descriptor; return their values."""
    for name, spec in specs.items():
        node.declare_parameter(name, spec.default, descriptor(spec))
    return {name: node.get_parameter(name).value for name in specs}


def _default_name(node_cls) -> str:
    name = getattr(node_cls, 'NODE_NAME', None) or node_cls.__name__
    return str(name)
