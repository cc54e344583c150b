"""
The debug picture of the live node (`llmos/debug_image`), ROS-free: frames in, rgb8 array out.

Layout (documented, tests rely on it):
- a header strip `HEADER` px high with the modalities used in the latent state and the latent's
  mean posterior standard deviation ("uncertainty"), white text on black;
- then one row per modality, in the model's modality order, `TILE` x `TILE` px tiles: column 0
  the newest input, column 1 its cross-modal prediction (decoded from the other modalities),
  black when there is none. Tile (row i, column j) starts at
  x = j * (TILE + GAP), y = HEADER + i * (TILE + GAP);
  the modality name is written in the prediction tile's top-left corner.
- each kind draws its frames (`Kind.frames_picture`): RGB pictures (images) are scaled to the
  tile (nearest neighbour, so a uniform input stays exactly its colour; mono shown grey);
  time-frequency pictures (audio) as a spectrogram over the 80 dB below its peak (time left to
  right, low frequencies at the bottom); other pictures (taxels: channel 0; a wrench: its six
  axes over time) as a heat map (black/blue .. red) from min(0, lowest) to the highest value of
  the row's two tiles, so input and prediction share the scale.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from llmos_ros.core.frames import Frame
from llmos_ros.errors import InputError
from llmos_ros.kinds import Kind

TILE = 128
GAP = 4
HEADER = 24
DB_RANGE = 80.0


def tile_origin(row: int, column: int) -> tuple[int, int]:
    """(x, y) of the top-left pixel of a tile."""
    return column * (TILE + GAP), HEADER + row * (TILE + GAP)


def render(kinds: Mapping[str, Kind], inputs: Mapping[str, Sequence[Frame]],
           predictions: Mapping[str, Frame], used: list[str], uncertainty: float) -> np.ndarray:
    """
    The debug picture (H x W x 3 uint8, RGB).

    `kinds` maps each modality, in model order, to its kind; `inputs` a modality to its newest
    input frames (oldest first, `Kind.picture_span_s`), `predictions` to its predicted frame;
    missing ones stay black.
    """
    import cv2
    width = 2 * TILE + GAP
    height = HEADER + len(kinds) * (TILE + GAP)
    canvas = np.zeros((height, width, 3), np.uint8)
    text = f'used: {",".join(used) or "-"}  std {uncertainty:.3f}'
    cv2.putText(canvas, text, (3, HEADER - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1,
                cv2.LINE_AA)
    for row, (name, kind) in enumerate(kinds.items()):
        pred = predictions.get(name)
        pictures = [_picture(kind, inputs.get(name) or []),
                    _picture(kind, [pred] if pred is not None else [])]
        for column, picture in enumerate(pictures):
            if picture is not None:
                x, y = tile_origin(row, column)
                canvas[y:y + TILE, x:x + TILE] = _tile(picture, kind, pictures)
        x, y = tile_origin(row, 1)
        cv2.putText(canvas, name, (x + 3, y + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return canvas


def _picture(kind: Kind, frames: Sequence[Frame]) -> np.ndarray | None:
    """The kind's picture of the frames; None (a black tile) without one."""
    if not frames:
        return None
    try:
        picture = kind.frames_picture(frames)
    except InputError:  # an undecodable input shows as black; it is counted where it is paired
        return None
    return picture if picture.size else None


def _tile(picture: np.ndarray, kind: Kind, row: list) -> np.ndarray:
    """A picture as a TILE x TILE x 3 uint8 RGB tile (`row`: both pictures of its row)."""
    import cv2
    if picture.ndim == 3:
        return cv2.resize(picture, (TILE, TILE), interpolation=cv2.INTER_NEAREST)
    if kind.time_frequency:  # dB below the peak, low frequencies at the bottom
        level = (picture[::-1] - picture.max() + DB_RANGE) / DB_RANGE
        colour, interpolation = cv2.COLORMAP_MAGMA, cv2.INTER_LINEAR
    else:  # a heat map on the row's shared scale
        values = [p[np.isfinite(p)] for p in row if p is not None and p.ndim == 2]
        lo = min([0.0] + [float(v.min()) for v in values if v.size])
        hi = max([lo] + [float(v.max()) for v in values if v.size])
        level = (np.nan_to_num(picture) - lo) / (hi - lo if hi > lo else 1.0)
        colour, interpolation = cv2.COLORMAP_JET, cv2.INTER_NEAREST
    level = np.clip(level * 255.0, 0, 255).astype(np.uint8)
    rgb = cv2.cvtColor(cv2.applyColorMap(level, colour), cv2.COLOR_BGR2RGB)
    return cv2.resize(rgb, (TILE, TILE), interpolation=interpolation)
