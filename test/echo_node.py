"""A child process for test_messages_dds: republishes every llmos_ros message it receives."""
import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

from llmos_ros.msg import AudioChunk, LatentState, TactileArray

TYPES = {'latent': LatentState, 'audio': AudioChunk, 'tactile': TactileArray}


class Echo(Node):
    def __init__(self):
        super().__init__('llmos_echo')
        self._pubs = {}
        for name, kind in TYPES.items():
            self._pubs[name] = self.create_publisher(kind, f'echo_out/{name}', 10)
            self.create_subscription(kind, f'echo_in/{name}',
                                     lambda msg, name=name: self._pubs[name].publish(msg), 10)


def main():
    rclpy.init()
    node = Echo()
    print('echo ready', flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
