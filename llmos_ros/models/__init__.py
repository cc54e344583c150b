"""The multimodal VAE (torch, ROS-free): networks, fusion, objectives, model."""
from llmos_ros.models.fusion import FUSIONS, Mixture, fuse, moe, mopoe, poe
from llmos_ros.models.mvae import MultimodalVAE

__all__ = ['FUSIONS', 'Mixture', 'MultimodalVAE', 'fuse', 'moe', 'mopoe', 'poe']
