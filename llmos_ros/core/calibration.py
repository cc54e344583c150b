"""
Camera calibration files in the camera_calibration_parsers YAML format (ROS-free).

The format `camera_calibration` writes and `camera_info_manager` reads:
    image_width: 640
    image_height: 480
    camera_name: my_camera
    camera_matrix: {rows: 3, cols: 3, data: [fx, 0, cx, 0, fy, cy, 0, 0, 1]}
    distortion_model: plumb_bob
    distortion_coefficients: {rows: 1, cols: 5, data: [k1, k2, t1, t2, k3]}
    rectification_matrix: {rows: 3, cols: 3, data: [...]}
    projection_matrix: {rows: 3, cols: 4, data: [...]}
`load_calibration` returns a `Calibration`; a missing file, a missing field or a matrix of the
wrong size is a ConfigError naming the file and the field. `uncalibrated(width, height)` is what
camera_info_manager publishes without a file: the size, and all-zero matrices (K[0] == 0 means
"not calibrated").
"""
from __future__ import annotations

from dataclasses import dataclass
import os

import yaml

from llmos_ros.errors import ConfigError

MATRICES = {'camera_matrix': (3, 3), 'rectification_matrix': (3, 3),
            'projection_matrix': (3, 4)}


@dataclass(frozen=True)
class Calibration:
    width: int
    height: int
    camera_name: str
    distortion_model: str
    k: tuple  # 9 values, row-major
    d: tuple
    r: tuple  # 9
    p: tuple  # 12

    @property
    def calibrated(self) -> bool:
        return self.k[0] != 0.0


def uncalibrated(width: int, height: int, camera_name: str = '') -> Calibration:
    """camera_info for a camera without a calibration file: size only, zero matrices."""
    return Calibration(int(width), int(height), camera_name, '', (0.0,) * 9, (), (0.0,) * 9,
                       (0.0,) * 12)


def calibration_path(url: str) -> str:
    """A local path for `camera_info_url`: 'file:///path' or a plain path."""
    if url.startswith('file://'):
        return url[len('file://'):]
    if '://' in url:
        raise ConfigError(f'camera_info_url {url!r}: only file:// URLs and paths are supported')
    return url


def load_calibration(url: str) -> Calibration:
    """Read a camera_calibration_parsers YAML file (see the module docstring)."""
    path = calibration_path(url)
    if not os.path.isfile(path):
        raise ConfigError(f'calibration file {path} does not exist (camera_info_url)')
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise ConfigError(f'calibration file {path} is not valid YAML: {exc}') from None
    if not isinstance(data, dict):
        raise ConfigError(f'calibration file {path}: expected a mapping of fields')

    def field(name):
        if name not in data:
            raise ConfigError(f'calibration file {path}: field {name} is missing')
        return data[name]

    matrices = {name: _matrix(path, name, field(name), shape) for name, shape in MATRICES.items()}
    distortion = field('distortion_coefficients')
    d = _matrix(path, 'distortion_coefficients', distortion,
                (1, len(distortion.get('data', []) if isinstance(distortion, dict) else [])))
    try:
        width, height = int(field('image_width')), int(field('image_height'))
    except (TypeError, ValueError):
        raise ConfigError(f'calibration file {path}: image_width and image_height must be '
                          'integers') from None
    return Calibration(width, height, str(data.get('camera_name', '')),
                       str(field('distortion_model')), matrices['camera_matrix'], d,
                       matrices['rectification_matrix'], matrices['projection_matrix'])


def _matrix(path: str, name: str, value, shape: tuple[int, int]) -> tuple:
    if not isinstance(value, dict) or 'data' not in value:
        raise ConfigError(f'calibration file {path}: {name} must be a mapping with rows, cols '
                          'and data')
    try:
        data = tuple(float(v) for v in value['data'])
    except (TypeError, ValueError):
        raise ConfigError(f'calibration file {path}: {name}.data must be numbers') from None
    rows, cols = value.get('rows', shape[0]), value.get('cols', shape[1])
    if (rows, cols) != shape or len(data) != rows * cols:
        raise ConfigError(f'calibration file {path}: {name} must be {shape[0]}x{shape[1]} '
                          f'({shape[0] * shape[1]} values); got rows {rows}, cols {cols}, '
                          f'{len(data)} values')
    return data
