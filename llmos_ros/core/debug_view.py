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
- images are scaled to the tile (nearest neighbour, so a uniform input stays exactly its colour;
  mono shown grey), taxels as a heat map of channel 0 (0 black/blue .. max red, scaled to the
  larger of the input's and the prediction's maximum), audio as a log-magnitude spectrogram
  (time left to right, low frequencies at the bottom).
"""
from __future__ import annotations

import numpy as np

from llmos_ros.core import frames as F

TILE = 128
GAP = 4
HEADER = 24
N_FFT = 256


def tile_origin(row: int, column: int) -> tuple[int, int]:
    """(x, y) of the top-left pixel of a tile."""
    return column * (TILE + GAP), HEADER + row * (TILE + GAP)


def render(names: list[str], inputs: dict, predictions: dict, used: list[str],
           uncertainty: float) -> np.ndarray:
    """
    The debug picture (H x W x 3 uint8, RGB).

    `inputs` maps a modality name to its newest input frame (an audio modality may map to a list
    of consecutive AudioFrames), `predictions` to its predicted frame; missing ones stay black.
    """
    import cv2
    width = 2 * TILE + GAP
    height = HEADER + len(names) * (TILE + GAP)
    canvas = np.zeros((height, width, 3), np.uint8)
    text = f'used: {",".join(used) or "-"}  std {uncertainty:.3f}'
    cv2.putText(canvas, text, (3, HEADER - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1,
                cv2.LINE_AA)
    for row, name in enumerate(names):
        scale = _taxel_scale(inputs.get(name), predictions.get(name))
        for column, frame in enumerate((inputs.get(name), predictions.get(name))):
            if frame is None or (isinstance(frame, list) and not frame):
                continue
            x, y = tile_origin(row, column)
            canvas[y:y + TILE, x:x + TILE] = tile(frame, scale)
        x, y = tile_origin(row, 1)
        cv2.putText(canvas, name, (x + 3, y + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return canvas


def tile(frame, taxel_scale: float = 0.0) -> np.ndarray:
    """One frame (or a list of audio frames) as a TILE x TILE x 3 uint8 RGB tile."""
    import cv2
    if isinstance(frame, list) or isinstance(frame, F.AudioFrame):
        return spectrogram_tile(frame if isinstance(frame, list) else [frame])
    if isinstance(frame, F.ImageFrame):
        rgb = image_rgb(frame)
    elif isinstance(frame, F.CompressedFrame):
        bgr = cv2.imdecode(np.frombuffer(bytes(frame.data), np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            return np.zeros((TILE, TILE, 3), np.uint8)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    elif isinstance(frame, F.TactileFrame):
        values = np.asarray(frame.values, np.float32).reshape(
            frame.rows, frame.cols, frame.channels)[..., 0]
        scale = taxel_scale or float(np.nanmax(values)) or 1.0
        level = np.clip(np.nan_to_num(values) / scale * 255.0, 0, 255).astype(np.uint8)
        rgb = cv2.cvtColor(cv2.applyColorMap(level, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    else:
        return np.zeros((TILE, TILE, 3), np.uint8)
    return cv2.resize(rgb, (TILE, TILE), interpolation=cv2.INTER_NEAREST)


def image_rgb(frame: F.ImageFrame) -> np.ndarray:
    """An 8-bit image frame (rgb8, bgr8, rgba8, bgra8, mono8; mono16 scaled) as H x W x 3 RGB."""
    data = np.asarray(frame.data)
    if frame.encoding == 'mono16':
        rows = data.view(np.uint16 if data.dtype == np.uint8 else data.dtype)
        pixels = rows.reshape(frame.height, -1)[:, :frame.width]
        gray = (pixels >> 8).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    channels = {'mono8': 1, 'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4}.get(frame.encoding)
    if channels is None:
        return np.zeros((frame.height, frame.width, 3), np.uint8)
    pixels = data.astype(np.uint8).reshape(frame.height, frame.step)[
        :, :frame.width * channels].reshape(frame.height, frame.width, channels)
    if channels == 1:
        return np.repeat(pixels, 3, axis=2)
    if frame.encoding.startswith('bgr'):
        return np.ascontiguousarray(pixels[..., 2::-1])
    return np.ascontiguousarray(pixels[..., :3])


def spectrogram_tile(frames: list) -> np.ndarray:
    """Consecutive audio frames (first channel) as a log-magnitude spectrogram tile."""
    import cv2
    samples = np.concatenate([np.asarray(f.samples, np.float32).reshape(-1, f.channels)[:, 0]
                              for f in frames])
    if samples.size < N_FFT:
        samples = np.pad(samples, (0, N_FFT - samples.size))
    hop = max(N_FFT // 4, (samples.size - N_FFT) // TILE or 1)
    starts = range(0, samples.size - N_FFT + 1, hop)
    window = np.hanning(N_FFT).astype(np.float32)
    spec = np.abs(np.stack([np.fft.rfft(samples[s:s + N_FFT] * window) for s in starts], 1))
    db = 20.0 * np.log10(spec + 1e-6)
    level = np.clip((db - db.max() + 80.0) / 80.0 * 255.0, 0, 255).astype(np.uint8)[::-1]
    rgb = cv2.cvtColor(cv2.applyColorMap(level, cv2.COLORMAP_MAGMA), cv2.COLOR_BGR2RGB)
    return cv2.resize(rgb, (TILE, TILE), interpolation=cv2.INTER_LINEAR)


def _taxel_scale(*frames) -> float:
    peaks = [float(np.nanmax(f.values)) for f in frames
             if isinstance(f, F.TactileFrame) and np.size(f.values)]
    return max([p for p in peaks if np.isfinite(p)] or [0.0])
