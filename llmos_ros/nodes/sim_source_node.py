"""
sim_source_node: the simulated scene (llmos_ros.sim.scene) published live at real-time pace.

Topics (relative, remappable): camera/image_raw (sensor_msgs/Image rgb8), microphone/audio
(llmos_ros/AudioChunk), tactile/array (llmos_ros/TactileArray), reliable like a driver (REP
2003; llmos_ros.nodes.qos, overridable), and episode/label (std_msgs/String 'object/material',
reliable, transient local, so a late subscriber gets the current label).

Header stamps are the scene's stamps mapped onto the node clock at start (clock now + scene
time), never re-stamped at publish time; a pacing thread publishes each message when its stamp
time arrives (an audio chunk once its last sample is due, as a microphone driver would), so the
executor stays free for parameter services. Parameters: the fields of
SceneConfig plus seed, duration_s (0: forever), max_lag_s (messages later than this are dropped
to catch up) are fixed at start; enable_camera, enable_audio and enable_tactile can be switched
at runtime (e.g. `ros2 param set /llmos_sim_source enable_tactile false`).
"""
from __future__ import annotations

from collections import Counter
import dataclasses
import threading
import time

from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import String

from llmos_ros.errors import LlmosError
from llmos_ros.msg import AudioChunk, TactileArray
from llmos_ros.nodes import convert
from llmos_ros.nodes.qos import create_sensor_publisher, overridable
from llmos_ros.sim.scene import LABEL_TOPIC, STREAMS, Scene, SceneConfig

ENABLE = {f'enable_{name}': topic for name, topic in STREAMS.items()}  # parameter -> topic
MESSAGES = {'camera': Image, 'audio': AudioChunk, 'tactile': TactileArray}  # by stream
LABEL_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                       reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.TRANSIENT_LOCAL)


class SimSourceNode(Node):
    """Publishes the simulated camera, microphone, taxels and episode labels."""

    def __init__(self, node_name: str = 'llmos_sim_source', **kwargs):
        super().__init__(node_name, **kwargs)
        def fixed(text):
            return ParameterDescriptor(description=text + '; read at start', read_only=True,
                                       dynamic_typing=True)
        defaults = SceneConfig()
        self.declare_parameter('seed', 0, fixed('scene seed: same seed, same messages'))
        for f in dataclasses.fields(SceneConfig):
            self.declare_parameter(f.name, getattr(defaults, f.name),
                                   fixed(f'scene setting SceneConfig.{f.name} (config/'
                                         'sim_source.yaml documents it)'))
        self.declare_parameter('duration_s', 0.0,
                               fixed('stop after this much scene time; 0: run until stopped'))
        self.declare_parameter('max_lag_s', 0.5,
                               fixed('a message due longer ago than this is dropped'))
        for name in ENABLE:
            self.declare_parameter(name, True, ParameterDescriptor(
                description=f'publish {ENABLE[name]}; may change at runtime'))

        values = {f.name: self.get_parameter(f.name).value
                  for f in dataclasses.fields(SceneConfig)}
        self.config = SceneConfig.from_dict(values)  # ConfigError names a bad value
        self.seed = int(self.get_parameter('seed').value)
        self.duration_s = float(self.get_parameter('duration_s').value)
        self.max_lag_s = float(self.get_parameter('max_lag_s').value)
        self.enabled = {ENABLE[n]: bool(self.get_parameter(n).value) for n in ENABLE}
        self.enabled[LABEL_TOPIC] = True
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._pubs = {
            **{topic: create_sensor_publisher(self, MESSAGES[name], topic)
               for name, topic in STREAMS.items()},
            LABEL_TOPIC: self.create_publisher(String, LABEL_TOPIC, LABEL_QOS,
                                               qos_overriding_options=overridable()),
        }
        self.counts: Counter = Counter()  # published per topic
        self.dropped: Counter = Counter()  # too late to publish, per topic
        self.max_lag = 0.0
        self.finished = threading.Event()  # set when duration_s has been published
        self._stop = threading.Event()
        self.start_ns = self.get_clock().now().nanoseconds
        self.scene = Scene(self.config, seed=self.seed, start_ns=self.start_ns)
        self._thread = threading.Thread(target=self._run, name='sim_source_pacing', daemon=True)
        self._thread.start()
        self.get_logger().info(
            f'simulating seed {self.seed}: camera {self.config.image_width}x'
            f'{self.config.image_height} @ {self.config.camera_rate_hz:g} Hz, audio '
            f'{self.config.sample_rate} Hz in {self.config.chunk_samples}-sample chunks, taxels '
            f'{self.config.rows}x{self.config.cols}x{self.config.channels} @ '
            f'{self.config.tactile_rate_hz:g} Hz, episodes of {self.config.episode_s:g} s')

    def _on_set_parameters(self, params) -> SetParametersResult:
        updates = {}
        for p in params:
            if p.name in ENABLE:
                if not isinstance(p.value, bool):
                    return SetParametersResult(successful=False,
                                               reason=f'{p.name} must be a bool')
                updates[ENABLE[p.name]] = p.value
        self.enabled.update(updates)
        for topic, on in updates.items():
            self.get_logger().info(f'{topic}: {"enabled" if on else "disabled"}')
        return SetParametersResult(successful=True)

    def _run(self) -> None:
        """Pacing thread: publish each scheduled message when its stamp time arrives."""
        scene, mono0 = self.scene, time.monotonic()
        try:
            for _stamp, topic, index in scene.schedule(self.duration_s or None, by_arrival=True):
                due = mono0 + (scene.available_ns(topic, index) - self.start_ns) * 1e-9
                delay = due - time.monotonic()
                if delay > 0:
                    if self._stop.wait(delay):
                        return
                elif self._stop.is_set():
                    return
                if not self.enabled[topic]:
                    continue
                lag = -delay
                self.max_lag = max(self.max_lag, lag)
                if lag > self.max_lag_s and topic != LABEL_TOPIC:
                    self.dropped[topic] += 1
                    continue
                self._pubs[topic].publish(self._message(topic, scene.render(topic, index)))
                self.counts[topic] += 1
        except Exception as exc:  # noqa: B902 - a dying thread must say why
            if self._stop.is_set() or not self.context.ok():
                return  # shutting down (Ctrl-C / SIGTERM shut the context first)
            self.get_logger().error(f'sim source stopped: {exc!r}')
            raise
        finally:
            self.finished.set()

    @staticmethod
    def _message(topic: str, item):
        """The message of a rendered item: the label's String, else the frame's message."""
        return String(data=item) if topic == LABEL_TOPIC else convert.frame_msg(item)

    def stats(self) -> dict:
        return {'counts': dict(self.counts), 'dropped': dict(self.dropped),
                'max_lag_s': round(self.max_lag, 4)}

    def destroy_node(self):
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        return super().destroy_node()


def main(args=None) -> int:
    """Run until Ctrl-C / SIGTERM (exit 0), or until duration_s is published; 1 on a bad value."""
    from rclpy.exceptions import ParameterException

    from llmos_ros.nodes.runtime import EXIT_OK, EXIT_USER_ERROR, use_dds_profile
    use_dds_profile()
    rclpy.init(args=args)
    node = None
    code = EXIT_OK
    try:
        node = SimSourceNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while rclpy.ok() and not node.finished.is_set():
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (LlmosError, ParameterException) as exc:
        rclpy.logging.get_logger('llmos_sim_source').error(str(exc))
        code = EXIT_USER_ERROR
    except Exception:
        if rclpy.ok():
            raise  # else: SIGTERM shut the context down between two executor steps
    finally:
        if node is not None:
            if node.context.ok():
                node.get_logger().info(f'stopping: {node.stats()}')
            else:  # interrupted: rosout went with the context
                print(f'[{node.get_name()}] stopping: {node.stats()}', flush=True)
            node.destroy_node()
        rclpy.try_shutdown()
    return code

if __name__ == '__main__':
    raise SystemExit(main())
