"""
llmos_ros: multimodal VAE perception for ROS 2.

The core (models, preprocessing, bags, training, evaluation) imports no rclpy and no generated
messages; the node layer lives in llmos_ros.nodes. In a colcon install the generated messages
(llmos_ros.msg) sit next to these modules; extend_path lets a source checkout on sys.path and the
built workspace share the one package name during development.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
__version__ = '0.1.0'
