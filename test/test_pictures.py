"""Each kind draws itself: `Kind.picture` (evaluation plots) and the node's debug picture."""
import numpy as np

from llmos_ros import kinds
from llmos_ros.core import debug_view
from llmos_ros.evaluation import plots
from llmos_ros.kinds.audio import AudioFrame
from llmos_ros.kinds.image import ImageFrame
from llmos_ros.kinds.taxels import TactileFrame
from llmos_ros.kinds.wrench import WrenchFrame

MS = 1_000_000
RGB = (200, 40, 90)
KINDS = {name: kinds.get(kind) for name, kind in
         (('camera', 'image'), ('audio', 'audio'), ('tactile', 'taxels'), ('ft', 'wrench'))}


def _inputs():
    rng = np.random.default_rng(3)
    tone = np.sin(2 * np.pi * 440 * np.arange(8000) / 8000).astype(np.float32)
    return {
        'camera': [ImageFrame(0, 'rgb8', 4, 6, 18, False, np.tile(np.uint8(RGB), 24))],
        'audio': [AudioFrame(i * 250 * MS, 8000, 1, tone[i * 2000:(i + 1) * 2000])
                  for i in range(4)],
        'tactile': [TactileFrame(0, 2, 2, 1, np.array([0, 0, 0, 1], np.float32))],
        'ft': [WrenchFrame(i * 10 * MS, np.array([i, -i, 0, 0, 0, 5], np.float32) * 0.1
                           + rng.normal(0, 0.01, 6).astype(np.float32)) for i in range(40)],
    }


def _tile(picture, row, column):
    x, y = debug_view.tile_origin(row, column)
    return picture[y:y + debug_view.TILE, x:x + debug_view.TILE].astype(int)


def test_debug_picture_draws_every_kind():
    prediction = WrenchFrame(0, np.array([1, 0, 0, 0, 0, 0], np.float32))
    picture = debug_view.render(KINDS, _inputs(), {'ft': prediction}, ['camera'], 0.5)
    assert picture.shape == (debug_view.HEADER + 4 * (debug_view.TILE + debug_view.GAP),
                             2 * debug_view.TILE + debug_view.GAP, 3)
    assert tuple(_tile(picture, 0, 0)[64, 64]) == RGB  # exactly the input's colour
    assert _tile(picture, 1, 0).std() > 5  # a spectrogram
    taxels = _tile(picture, 2, 0)
    assert taxels[-1, -1, 0] > taxels[0, 0, 0]  # heat map: the last taxel (1.0) redder than 0
    wrench = _tile(picture, 3, 0)
    assert wrench.max() > 0 and wrench.std() > 5  # the six axes over time, not a black tile
    assert not np.array_equal(wrench[0], wrench[-1])  # force x rises, torque z stays
    assert _tile(picture, 3, 1).max() > 0  # the wrench prediction
    assert _tile(picture, 0, 1).max() <= 255 and _tile(picture, 1, 1)[20:].max() == 0


def test_undecodable_input_is_a_black_tile():
    bad = ImageFrame(0, 'yuv422', 4, 6, 12, False, np.zeros(48, np.uint8))
    picture = debug_view.render({'camera': KINDS['camera']}, {'camera': [bad]}, {}, [], 0.0)
    assert _tile(picture, 0, 0).max() == 0


def test_kind_pictures_of_model_arrays(tmp_path):
    assert kinds.get('image').picture(np.zeros((3, 4, 5))).shape == (4, 5, 3)
    assert kinds.get('image').picture(np.zeros((1, 4, 5))).shape == (4, 5)
    assert kinds.get('audio').picture(np.zeros((1, 16, 9))).shape == (16, 9)
    assert kinds.get('audio').time_frequency and not kinds.get('wrench').time_frequency
    window = np.arange(6 * 32, dtype=np.float64).reshape(6, 32, 1)
    np.testing.assert_array_equal(kinds.get('wrench').picture(window), window[:, :, 0])
    path = plots.plot_examples({'input': window[None], 'recon': window[None] * 0.5},
                               tmp_path / 'ft.png', kind='wrench')
    assert path.stat().st_size > 1000
