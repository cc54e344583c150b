"""
Start llmos_ros perception: `ros2 launch llmos_ros perception.launch.py model:=/path/model.pt`.

The arguments and the nodes come from llmos_ros.nodes.graph (ARGUMENTS, graph_from_arguments),
the same the embedded runner (`llmos-demo`, `python -m llmos_ros.nodes.runner`) uses. Wire it to
a robot's topics: `camera_topic:=/front/image_color camera_reliability:=reliable`.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch_ros.actions import Node

from launch import LaunchDescription
from llmos_ros.nodes.graph import ARGUMENTS, PACKAGE, graph_from_arguments


def _nodes(context):
    config = os.path.join(get_package_share_directory(PACKAGE), 'config')
    values = {name: context.launch_configurations[name] for name in ARGUMENTS}
    namespace = values['namespace']
    return [Node(package=PACKAGE, executable=spec.executable, name=spec.name,
                 namespace=namespace, output='screen', ros_arguments=spec.ros_arguments())
            for spec in graph_from_arguments(values, config)]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, (default, text) in ARGUMENTS.items()] + [OpaqueFunction(function=_nodes)])
