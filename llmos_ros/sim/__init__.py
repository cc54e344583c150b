"""Simulated sensors: a seeded scene driving camera, contact sound and taxels (ROS-free)."""
from llmos_ros.sim.scene import LABELS, MATERIALS, OBJECTS, Scene, SceneConfig, SceneState

__all__ = ['LABELS', 'MATERIALS', 'OBJECTS', 'Scene', 'SceneConfig', 'SceneState']
