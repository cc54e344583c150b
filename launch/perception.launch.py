"""
Start llmos_ros perception: `ros2 launch llmos_ros perception.launch.py model:=/path/model.pt`.

The nodes and their arguments come from llmos_ros.nodes.graph.perception_graph(), the same
function the embedded runner (`llmos-demo`, `python -m llmos_ros.nodes.runner`) uses.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch_ros.actions import Node

from launch import LaunchDescription
from llmos_ros.nodes.graph import PACKAGE, perception_graph

ARGUMENTS = {
    'model': ('', 'path to the trained checkpoint (llmos-train --out)'),
    'params_file': ('', 'perception parameters; default: config/perception.yaml of the package'),
    'namespace': ('', 'namespace for every node'),
    'use_sim_time': ('false', 'use /clock (e.g. with ros2 bag play --clock)'),
    'device': ('', "torch device for the model: 'cpu' or 'cuda[:N]'; default from params"),
    'start_sim': ('false', 'also start the simulated sensor source'),
    'start_camera': ('false', 'also start camera_node (config/camera.yaml)'),
    'start_microphone': ('false', 'also start microphone_node (config/microphone.yaml)'),
}


def _nodes(context):
    share = get_package_share_directory(PACKAGE)
    config = os.path.join(share, 'config')

    def arg(name):
        return context.launch_configurations[name]

    def flag(name):
        return arg(name).lower() in ('true', '1', 'yes')

    graph = perception_graph(
        params_file=arg('params_file') or os.path.join(config, 'perception.yaml'),
        model=arg('model'), device=arg('device'), use_sim_time=flag('use_sim_time'),
        start_sim=flag('start_sim'), start_camera=flag('start_camera'),
        start_microphone=flag('start_microphone'),
        sim_params_file=os.path.join(config, 'sim_source.yaml'),
        camera_params_file=os.path.join(config, 'camera.yaml'),
        microphone_params_file=os.path.join(config, 'microphone.yaml'))
    return [Node(package=PACKAGE, executable=spec.executable, name=spec.name,
                 namespace=arg('namespace'), output='screen',
                 ros_arguments=spec.ros_arguments())
            for spec in graph]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, (default, text) in ARGUMENTS.items()] + [OpaqueFunction(function=_nodes)])
