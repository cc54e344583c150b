"""
The node graph of llmos_ros, in one place.

Both `launch/perception.launch.py` (launch_ros, on a full ROS 2 install) and the embedded runner
(`llmos_ros.nodes.runner`, one process, an rclpy executor; for machines without `launch`) build
their nodes from `graph_from_arguments()` (the launch arguments in ARGUMENTS) and
`perception_graph()`, so the two cannot disagree. Each node gets the same command-line arguments
either way: a params file, parameter overrides and remappings.

Input topics: for each input of INPUTS, `<input>_topic:=/front/image_color` remaps the node's
relative topic (perception_node's subscription, and the driver or simulator publishing it when
started here) and `<input>_reliability:=reliable|best_effort` sets perception_node's
`qos_overrides.<resolved topic>.subscription.reliability`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import os

PACKAGE = 'llmos_ros'
# input argument prefix -> the relative topic nodes use
INPUTS = {'camera': 'camera/image_raw', 'microphone': 'microphone/audio',
          'tactile': 'tactile/array', 'tactile_image': 'tactile/image'}
RELIABILITIES = ('reliable', 'best_effort')
ARGUMENTS = {  # name -> (default, description), shared by the launch file and the runner
    'model': ('', 'path to the trained checkpoint (llmos-train --out)'),
    'params_file': ('', 'perception parameters; default: config/perception.yaml of the package'),
    'namespace': ('', 'namespace for every node'),
    'use_sim_time': ('false', 'use /clock (e.g. with ros2 bag play --clock)'),
    'device': ('', "torch device for the model: 'cpu' or 'cuda[:N]'; default from params"),
    'start_sim': ('false', 'also start the simulated sensor source'),
    'start_camera': ('false', 'also start camera_node (config/camera.yaml)'),
    'start_microphone': ('false', 'also start microphone_node (config/microphone.yaml)'),
    **{f'{name}_topic': ('', f'topic to read {topic} from (a remapping); empty: {topic}')
       for name, topic in INPUTS.items()},
    **{f'{name}_reliability': ('', f'QoS reliability of the {name} subscription: reliable or '
                               'best_effort; empty: best_effort (sensor data)')
       for name in INPUTS},
}


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


def graph_from_arguments(values: dict[str, str], config: str) -> list[NodeSpec]:
    """The graph for launch arguments `values` (names of ARGUMENTS), config files in `config`."""
    unknown = sorted(set(values) - set(ARGUMENTS))
    if unknown:
        raise ValueError(f'unknown launch arguments {unknown}; expected {", ".join(ARGUMENTS)}')

    def arg(name):
        return values.get(name, ARGUMENTS[name][0]) or ''

    def flag(name):
        return arg(name).lower() in ('true', '1', 'yes')

    return perception_graph(
        params_file=arg('params_file') or os.path.join(config, 'perception.yaml'),
        model=arg('model'), device=arg('device'), use_sim_time=flag('use_sim_time'),
        start_sim=flag('start_sim'), start_camera=flag('start_camera'),
        start_microphone=flag('start_microphone'),
        sim_params_file=os.path.join(config, 'sim_source.yaml'),
        camera_params_file=os.path.join(config, 'camera.yaml'),
        microphone_params_file=os.path.join(config, 'microphone.yaml'),
        topics={name: arg(f'{name}_topic') for name in INPUTS if arg(f'{name}_topic')},
        reliability={name: arg(f'{name}_reliability') for name in INPUTS
                     if arg(f'{name}_reliability')},
        namespace=arg('namespace'))


def perception_graph(params_file: str, model: str = '', device: str = '',
                     use_sim_time: bool = False, start_sim: bool = False,
                     start_camera: bool = False, start_microphone: bool = False,
                     sim_params_file: str = '', camera_params_file: str = '',
                     microphone_params_file: str = '', topics: dict | None = None,
                     reliability: dict | None = None, namespace: str = '') -> list[NodeSpec]:
    """
    Nodes of one perception deployment; optional drivers and the simulated source.

    `topics` maps an input of INPUTS to the topic it is read from (remapped in every node);
    `reliability` maps an input to the reliability of perception_node's subscription to it;
    `namespace` (the nodes') resolves relative topics in the QoS override names.
    """
    remaps = input_remappings(topics or {})
    common = {'use_sim_time': use_sim_time}
    perception = dict(common)
    if model:
        perception['model_path'] = model
    if device:
        perception['device'] = device
    perception.update(reliability_overrides(reliability or {}, topics or {}, namespace))
    nodes = [NodeSpec('perception_node', 'llmos_ros.nodes.perception_node', 'PerceptionNode',
                      'llmos_perception', _files(params_file), perception, remaps)]
    if start_sim:
        nodes.append(NodeSpec('sim_source_node', 'llmos_ros.nodes.sim_source_node',
                              'SimSourceNode', 'llmos_sim_source', _files(sim_params_file),
                              dict(common), remaps))
    if start_camera:
        nodes.append(NodeSpec('camera_node', 'llmos_ros.nodes.camera_node', 'CameraNode',
                              'llmos_camera', _files(camera_params_file), dict(common), remaps))
    if start_microphone:
        nodes.append(NodeSpec('microphone_node', 'llmos_ros.nodes.microphone_node',
                              'MicrophoneNode', 'llmos_microphone',
                              _files(microphone_params_file), dict(common), remaps))
    return nodes


def input_remappings(topics: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """Remappings for input topics; the camera's compressed stream follows (image_transport)."""
    remaps = []
    for name, target in topics.items():
        if name not in INPUTS:
            raise ValueError(f'unknown input {name!r}; expected one of {", ".join(INPUTS)}')
        remaps.append((INPUTS[name], target))
        if name == 'camera':
            remaps.append((INPUTS[name] + '/compressed', target + '/compressed'))
    return tuple(remaps)


def reliability_overrides(reliability: dict[str, str], topics: dict[str, str],
                          namespace: str = '') -> dict[str, str]:
    """qos_overrides parameters for perception_node's input subscriptions."""
    out = {}
    for name, value in reliability.items():
        if value not in RELIABILITIES:
            raise ValueError(f'{name}_reliability is {value!r}; expected one of '
                             f'{", ".join(RELIABILITIES)}')
        for topic in _input_topics(name, topics.get(name, INPUTS[name])):
            out[f'qos_overrides.{resolve(topic, namespace)}.subscription.reliability'] = value
    return out


def _input_topics(name: str, topic: str) -> list[str]:
    return [topic, topic + '/compressed'] if name == 'camera' else [topic]


def resolve(topic: str, namespace: str = '') -> str:
    """The fully resolved name of a plain topic name in `namespace` (no ~ or substitutions)."""
    if topic.startswith('/'):
        return topic
    ns = namespace.strip('/')
    return f'/{ns}/{topic}' if ns else f'/{topic}'


def _files(path: str) -> tuple[str, ...]:
    return (path,) if path else ()


def _param_text(value) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    return str(value)
