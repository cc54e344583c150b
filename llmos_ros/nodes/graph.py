"""
The node graph of llmos_ros, in one place.

Both `launch/perception.launch.py` (launch_ros, on a full ROS 2 install) and the embedded runner
(`llmos_ros.nodes.runner`, one process, an rclpy executor; for machines without `launch`) build
their nodes from `perception_graph()`, so the two cannot disagree. Each node gets the same
command-line arguments either way: a params file, parameter overrides and remappings.
"""
from __future__ import annotations

from dataclasses import dataclass, field

PACKAGE = 'llmos_ros'


@dataclass(frozen=True)
class NodeSpec:
    """One node: what to run and with which ROS arguments."""

    executable: str  # in lib/llmos_ros, also a `main` in `module`
    module: str  # Python module holding the node class and main()
    node_class: str  # class name inside `module`
    name: str
    params_files: tuple[str, ...] = ()
    parameters: dict = field(default_factory=dict)  # overrides, applied after the files
    remappings: tuple[tuple[str, str], ...] = ()

    def ros_arguments(self) -> list[str]:
        """Arguments after `--ros-args` (params files, overrides, remappings), as launch passes."""
        args = []
        for path in self.params_files:
            args += ['--params-file', path]
        for key, value in self.parameters.items():
            args += ['-p', f'{key}:={_param_text(value)}']
        for src, dst in self.remappings:
            args += ['-r', f'{src}:={dst}']
        return args


def perception_graph(params_file: str, model: str = '', device: str = '',
                     use_sim_time: bool = False, start_sim: bool = False,
                     start_camera: bool = False, start_microphone: bool = False,
                     sim_params_file: str = '', camera_params_file: str = '',
                     microphone_params_file: str = '') -> list[NodeSpec]:
    """Nodes of one perception deployment; optional drivers and the simulated source."""
    common = {'use_sim_time': use_sim_time}
    perception = dict(common)
    if model:
        perception['model_path'] = model
    if device:
        perception['device'] = device
    nodes = [NodeSpec('perception_node', 'llmos_ros.nodes.perception_node', 'PerceptionNode',
                      'llmos_perception', _files(params_file), perception)]
    if start_sim:
        nodes.append(NodeSpec('sim_source_node', 'llmos_ros.nodes.sim_source_node',
                              'SimSourceNode', 'llmos_sim_source', _files(sim_params_file),
                              dict(common)))
    if start_camera:
        nodes.append(NodeSpec('camera_node', 'llmos_ros.nodes.camera_node', 'CameraNode',
                              'llmos_camera', _files(camera_params_file), dict(common)))
    if start_microphone:
        nodes.append(NodeSpec('microphone_node', 'llmos_ros.nodes.microphone_node',
                              'MicrophoneNode', 'llmos_microphone',
                              _files(microphone_params_file), dict(common)))
    return nodes


def _files(path: str) -> tuple[str, ...]:
    return (path,) if path else ()


def _param_text(value) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    return str(value)
