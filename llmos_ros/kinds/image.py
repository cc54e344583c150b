"""
Kind 'image': camera or optical tactile images, shape (channels, height, width).

Reads sensor_msgs/Image (rgb8, bgr8, mono8, rgba8, bgra8, mono16 and the cv_bridge aliases) and
CompressedImage (jpeg / png). Paired as the newest frame at the sample time. Preprocessing:
decoded, converted to the model's channels (1 = grey, 3 = RGB), resized with `cv2.INTER_AREA`,
scaled to [0, 1]; predictions are published as mono8 / rgb8 Images at the model's size.
Bad input raises InputError 'type', 'encoding', 'size', 'decode' or 'too_large'. Drawn as RGB
(or grey) pictures.

Likelihood 'space_shift' (`Kind.likelihoods`): the Gaussian around the decoded image averaged
over every circular shift of up to `max_shift` of each side (at least 1 px) along height and
width: where exactly the scene sits in the frame (a camera's small motions, a digit held a
little off centre, a touch a few pixels over on the pad) is left to the likelihood, so the
latent carries what is seen rather than its exact pixel offset; larger displacements stay in
the latent. 'gaussian' keeps every pixel offset.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import cv2
import numpy as np

from llmos_ros.core.frames import Frame, check_limit, header_fields
from llmos_ros.core.messages import Flavour, array_field, header
from llmos_ros.errors import InputError
from llmos_ros.kinds.base import Kind

if TYPE_CHECKING:
    from llmos_ros.config import ModalityConfig

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED_IMAGE = 'sensor_msgs/msg/CompressedImage'
# Size limits, checked on the message before any copy or decode (InputError 'too_large'):
MAX_IMAGE_PIXELS = 4096 * 4096  # raw or compressed (declared size); 4K UHD fits
MAX_IMAGE_BYTES = 64 * 1024 * 1024  # raw image data (4096 x 4096 rgba8 = 64 MiB)
MAX_COMPRESSED_BYTES = 16 * 1024 * 1024
MAX_SIDE = 64  # inferred image modalities are downscaled to at most this many pixels a side
_MONO = ('mono8', 'mono16', '8uc1', '16uc1')

# encoding -> (channels, bytes per channel, colour order); aliases as cv_bridge uses them
_ENCODINGS = {
    'rgb8': (3, 1, 'rgb'), 'bgr8': (3, 1, 'bgr'), 'rgba8': (4, 1, 'rgb'), 'bgra8': (4, 1, 'bgr'),
    'mono8': (1, 1, 'mono'), 'mono16': (1, 2, 'mono'),
    '8uc1': (1, 1, 'mono'), '8uc3': (3, 1, 'bgr'), '8uc4': (4, 1, 'bgr'), '16uc1': (1, 2, 'mono'),
}


@dataclass(frozen=True)
class ImageFrame(Frame):
    """One sensor_msgs/Image."""

    stamp_ns: int
    encoding: str
    height: int
    width: int
    step: int
    is_bigendian: bool
    data: np.ndarray  # uint8, flat, as in the message
    frame_id: str = ''


@dataclass(frozen=True)
class CompressedFrame(Frame):
    """One sensor_msgs/CompressedImage."""

    stamp_ns: int
    format: str  # e.g. 'jpeg', 'png', 'rgb8; jpeg compressed bgr8'
    data: np.ndarray  # uint8, flat
    frame_id: str = ''


def decode_image(frame: ImageFrame | CompressedFrame) -> np.ndarray:
    """
    Decode one image frame to a float32 (H, W, C) array in [0, 1], C in {1, 3}, RGB order.

    Raises InputError('encoding' | 'size' | 'decode').
    """
    if isinstance(frame, CompressedFrame):
        return _decode_compressed(frame)
    ch, nbytes, order = _check_image(frame)
    h, w, step = int(frame.height), int(frame.width), int(frame.step)
    data = np.asarray(frame.data, dtype=np.uint8).ravel()
    rows = data.reshape(h, step)[:, :w * ch * nbytes]
    if nbytes == 1:
        arr = rows.reshape(h, w, ch).astype(np.float32) * np.float32(1.0 / 255.0)
    else:
        dtype = np.dtype('>u2') if frame.is_bigendian else np.dtype('<u2')
        arr = np.ascontiguousarray(rows).view(dtype).reshape(h, w, ch)
        arr = arr.astype(np.float32) * np.float32(1.0 / 65535.0)
    return _to_rgb(arr, order)


def _check_image(frame: ImageFrame) -> tuple[int, int, str]:
    """Header checks of a raw image: (channels, bytes per channel, colour order)."""
    if not isinstance(frame, ImageFrame):
        raise InputError('type', f'expected an image, got {type(frame).__name__}')
    enc = str(frame.encoding).strip().lower()
    if enc not in _ENCODINGS:
        raise InputError('encoding', f'unsupported image encoding {frame.encoding!r}; '
                         f'supported: rgb8, bgr8, mono8, rgba8, bgra8, mono16')
    ch, nbytes, order = _ENCODINGS[enc]
    h, w, step = int(frame.height), int(frame.width), int(frame.step)
    if h <= 0 or w <= 0:
        raise InputError('size', f'image has no pixels ({w}x{h})')
    if step < w * ch * nbytes:
        raise InputError('size', f'image step {step} < width {w} x {ch * nbytes} bytes/pixel')
    if frame.data.size != h * step:
        raise InputError('size', f'image data has {frame.data.size} bytes, expected height {h}'
                         f' x step {step} = {h * step}')
    return ch, nbytes, order


def _compressed_kind(frame: CompressedFrame) -> str:
    fmt = str(frame.format).strip().lower()
    # image_transport: 'jpeg', 'png', or '<orig enc>; <jpeg|png> compressed <enc>'
    comp = fmt.split(';', 1)[1] if ';' in fmt else fmt
    if 'compresseddepth' in fmt or not any(k in comp for k in ('jpeg', 'jpg', 'png')):
        raise InputError('encoding', f'unsupported compressed image format {frame.format!r} '
                         f'(jpeg or png expected)')
    if frame.data.size == 0:
        raise InputError('decode', 'compressed image has no data')
    size = compressed_size(frame.data)
    if size is not None and size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise InputError('too_large', f'compressed image declares {size[0]}x{size[1]} pixels, '
                         f'above the limit {MAX_IMAGE_PIXELS}; not decoded')
    return comp


def compressed_size(data: np.ndarray) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header without decoding; None if not found."""
    head = bytes(data[:32])
    if head.startswith(b'\x89PNG\r\n\x1a\n') and len(head) >= 24:
        return int.from_bytes(head[16:20], 'big'), int.from_bytes(head[20:24], 'big')
    if not head.startswith(b'\xff\xd8'):
        return None
    buf, i = memoryview(np.ascontiguousarray(data[:1 << 20])), 2  # SOF is near the start
    while i + 9 < len(buf):
        if buf[i] != 0xFF:
            return None
        marker = buf[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = (buf[i + 2] << 8) | buf[i + 3]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            return (buf[i + 7] << 8) | buf[i + 8], (buf[i + 5] << 8) | buf[i + 6]
        i += 2 + length
    return None


def _to_rgb(arr: np.ndarray, order: str) -> np.ndarray:
    if arr.shape[2] == 4:
        arr = arr[:, :, :3]  # alpha is dropped
    if order == 'bgr':
        arr = arr[:, :, ::-1]
    return np.ascontiguousarray(arr)


def _decode_compressed(frame: CompressedFrame) -> np.ndarray:
    _compressed_kind(frame)
    data = np.asarray(frame.data, dtype=np.uint8).ravel()
    try:
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise InputError('decode', f'cannot decode {frame.format!r} image: {exc}') from None
    if img is None or img.size == 0:
        raise InputError('decode', f'cannot decode {frame.format!r} image ({data.size} bytes)')
    scale = 1.0 / 65535.0 if img.dtype == np.uint16 else 1.0 / 255.0
    if img.dtype not in (np.uint8, np.uint16):
        raise InputError('decode', f'unsupported decoded pixel type {img.dtype}')
    if img.ndim == 2:
        img = img[:, :, None]
    arr = img.astype(np.float32) * np.float32(scale)
    return _to_rgb(arr, 'bgr' if arr.shape[2] >= 3 else 'mono')


def _image_to_model(arr: np.ndarray, mod: ModalityConfig) -> np.ndarray:
    """(H, W, C) float32 -> (channels, height, width) of the model."""
    if mod.channels == 1 and arr.shape[2] == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2GRAY)[:, :, None]
    elif mod.channels == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif mod.channels not in (1, 3):
        raise InputError('size', f'modality {mod.name}: image channels must be 1 or 3, '
                         f'not {mod.channels}')
    if arr.shape[0] != mod.height or arr.shape[1] != mod.width:
        arr = cv2.resize(arr, (mod.width, mod.height), interpolation=cv2.INTER_AREA)
        if arr.ndim == 2:
            arr = arr[:, :, None]
    return np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)


def shift_images(batch: np.ndarray, rng: np.random.Generator, shift: float) -> np.ndarray:
    """
    Random translations of a batch [B, C, H, W], edges repeated.

    Image i moves by (dy_i, dx_i), each uniform in [-round(shift * side), round(shift * side)]
    pixels. A camera that moves
    a little, or an object placed a little off, is the same scene: on small data sets (a few
    object instances) this is what keeps the encoders from memorising pixel positions.
    """
    b, _, h, w = batch.shape
    sy, sx = int(round(shift * h)), int(round(shift * w))
    if b == 0 or (sy == 0 and sx == 0):
        return batch
    padded = np.pad(batch, ((0, 0), (0, 0), (sy, sy), (sx, sx)), mode='edge')
    dy = rng.integers(-sy, sy + 1, size=b)
    dx = rng.integers(-sx, sx + 1, size=b)
    out = np.empty_like(batch)
    for i in range(b):  # a view per image: cheap next to a training step
        out[i] = padded[i, :, sy - dy[i]:sy - dy[i] + h, sx - dx[i]:sx - dx[i] + w]
    return out


class ImageKind(Kind):
    """Camera and optical tactile images (module doc)."""

    name = 'image'
    message_types = (IMAGE, COMPRESSED_IMAGE)
    frame_types = (ImageFrame, CompressedFrame)
    likelihoods = ('space_shift', 'gaussian')
    prediction_type = IMAGE
    reference_rank = 0

    def frame_from_msg(self, msg_type: str, msg: Any) -> Frame:
        """An Image or CompressedImage, its data as uint8 (sizes checked before the copy)."""
        stamp, frame_id = header_fields(msg)
        if msg_type == COMPRESSED_IMAGE:
            check_limit('compressed image bytes', len(msg.data), MAX_COMPRESSED_BYTES)
            return CompressedFrame(stamp, str(msg.format),
                                   np.frombuffer(bytes(msg.data), np.uint8), frame_id)
        check_limit(f'image {msg.width}x{msg.height}: pixels', int(msg.height) * int(msg.width),
                    MAX_IMAGE_PIXELS)
        check_limit('image data bytes', len(msg.data), MAX_IMAGE_BYTES)
        return ImageFrame(stamp, str(msg.encoding), int(msg.height), int(msg.width),
                          int(msg.step), bool(msg.is_bigendian),
                          np.frombuffer(bytes(msg.data), np.uint8), frame_id)

    def frame_message(self, frame: Frame, flavour: Flavour) -> tuple[str, Any]:
        """An Image or CompressedImage."""
        head = header(frame.stamp_ns, frame.frame_id, flavour)
        data = array_field(frame.data, np.uint8, flavour)
        if isinstance(frame, CompressedFrame):
            return COMPRESSED_IMAGE, flavour.message_class(COMPRESSED_IMAGE)(
                header=head, format=str(frame.format), data=data)
        return IMAGE, flavour.message_class(IMAGE)(
            header=head, height=int(frame.height), width=int(frame.width),
            encoding=str(frame.encoding), is_bigendian=int(bool(frame.is_bigendian)),
            step=int(frame.step), data=data)

    def windowed(self, mod: ModalityConfig) -> bool:
        """Images are never windowed: the newest frame at the sample time."""
        return False

    def shift_reach(self, mod: ModalityConfig) -> tuple[int | None, ...] | None:
        """'space_shift': up to max_shift of each side (at least 1 px) along height and width."""
        if mod.likelihood != 'space_shift':
            return None
        return tuple(max(1, round(side * mod.max_shift)) for side in (mod.height, mod.width))

    def shape(self, mod: ModalityConfig) -> tuple[int, ...]:
        """(channels, height, width)."""
        return (mod.channels, mod.height, mod.width)

    def validate(self, mod: ModalityConfig, frame: Frame) -> None:
        """Header checks (encoding, sizes, compressed format and declared size), no decoding."""
        if isinstance(frame, CompressedFrame):
            _compressed_kind(frame)
        else:
            _check_image(frame)

    def preprocess(self, mod: ModalityConfig, window: Sequence[Frame],
                   stamp_ns: int | None) -> np.ndarray:
        """The newest frame of the window, decoded and resized to the model's image."""
        return _image_to_model(decode_image(window[-1]), mod)

    def augment(self, mod: ModalityConfig, batch: np.ndarray, rng: np.random.Generator,
                shift: float) -> np.ndarray:
        """
        Each image translated by a random whole number of pixels (`shift_images`).

        Up to round(shift x side) on each axis, the border pixels repeated into the uncovered
        strip.
        """
        return shift_images(batch, rng, shift)

    def inverse(self, mod: ModalityConfig, array: np.ndarray) -> np.ndarray:
        """[0, 1] -> [0, 255], clipped."""
        return np.clip(array * np.float32(255.0), 0.0, 255.0)

    def prediction_frame(self, mod: ModalityConfig, raw: np.ndarray, stamp_ns: int,
                         frame_id: str, iterations: int = 4) -> Frame:
        """A mono8 or rgb8 image at the model's size."""
        pixels = np.clip(raw + 0.5, 0, 255).astype(np.uint8).transpose(1, 2, 0)
        h, w, c = pixels.shape
        return ImageFrame(stamp_ns, 'mono8' if c == 1 else 'rgb8', h, w, w * c, False,
                          np.ascontiguousarray(pixels).ravel(), frame_id)

    def picture(self, array: np.ndarray) -> np.ndarray:
        """RGB (height, width, 3) of a 3-channel image, else the channel mean (height, width)."""
        array = np.asarray(array, np.float64)
        return array.transpose(1, 2, 0) if array.shape[0] == 3 else array.mean(axis=0)

    def frames_picture(self, frames: Sequence[Frame]) -> np.ndarray:
        """The newest frame decoded, uint8 RGB (mono as grey); InputError if it cannot be."""
        rgb = decode_image(frames[-1])
        rgb = np.repeat(rgb, 3, axis=2) if rgb.shape[2] == 1 else rgb
        return (rgb * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)

    def role(self, topic: str) -> str:
        """'tactile_image' for a topic named tactile (optical tactile sensors), else 'camera'."""
        return 'tactile_image' if 'tactile' in topic else 'camera'

    def from_topic(self, msg_type: str, frame: Frame) -> dict:
        """
        Size and channels of the first image.

        The size is kept up to MAX_SIDE px a side, else downscaled to MAX_SIDE keeping the
        aspect; channels 1 for mono encodings, else 3.
        """
        img = decode_image(frame)
        if isinstance(frame, ImageFrame):
            channels = 1 if frame.encoding.lower() in _MONO else 3
        else:
            channels = img.shape[2]
        h, w = img.shape[0], img.shape[1]
        if max(h, w) > MAX_SIDE:
            scale = MAX_SIDE / max(h, w)
            h, w = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
        return {'height': h, 'width': w, 'channels': channels}
