"""
pip install of the ROS-free core of llmos_ros (models, preprocessing, bags, training, evaluation).

Inside a ROS 2 workspace the package is built by colcon through CMakeLists.txt instead; that build
also generates the messages in msg/. The executables and data files listed here must match the
ones CMakeLists.txt installs (test/test_packaging.py checks).
"""
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = 'llmos_ros'
HERE = Path(__file__).parent

# name -> module with main(); the same names are installed by CMakeLists.txt into lib/llmos_ros.
ENTRY_POINTS = {
    'perception_node': 'llmos_ros.nodes.perception_node',
    'camera_node': 'llmos_ros.nodes.camera_node',
    'microphone_node': 'llmos_ros.nodes.microphone_node',
    'sim_source_node': 'llmos_ros.nodes.sim_source_node',
    'llmos-train': 'llmos_ros.train',
    'llmos-eval': 'llmos_ros.evaluation.cli',
    'llmos-replay': 'llmos_ros.nodes.replay',
    'llmos-demo': 'llmos_ros.nodes.demo',
}
DATA_DIRS = ('launch', 'config', 'msg')


def _data_files():
    files = [('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
             ('share/' + PACKAGE, ['package.xml'])]
    for folder in DATA_DIRS:
        paths = sorted(str(p.relative_to(HERE)) for p in (HERE / folder).iterdir() if p.is_file())
        files.append((f'share/{PACKAGE}/{folder}', paths))
    return files


def _requirements():
    lines = (HERE / 'requirements' / 'core.txt').read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith('#')]


setup(
    name=PACKAGE,
    version='0.1.0',
    description='Multimodal VAE perception for ROS 2: one latent state from camera, '
                'microphone and touch.',
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=find_packages(include=[PACKAGE, PACKAGE + '.*']),
    data_files=_data_files(),
    install_requires=_requirements(),
    entry_points={'console_scripts': [f'{name} = {module}:main'
                                      for name, module in ENTRY_POINTS.items()]},
)
