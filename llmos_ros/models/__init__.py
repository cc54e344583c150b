"""The multimodal VAE (torch, ROS-free): networks, fusions, objectives, model."""
from llmos_ros.models.fusion import Mixture
from llmos_ros.models.mvae import MultimodalVAE

__all__ = ['Mixture', 'MultimodalVAE']
