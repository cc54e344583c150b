"""
Frames -> float32 model arrays: the one preprocessing path of training, offline eval and live.

`Preprocessor(mod_cfg, stats)(window, stamp_ns)` returns an array of `mod_cfg.shape()`:

- images (Image of any contract encoding, or CompressedImage jpeg/png): decoded, converted to the
  model's channels (1 = grey, 3 = RGB), resized with `cv2.INTER_AREA`, scaled to [0, 1];
- audio (AudioChunk): the window's chunks concatenated, downmixed, resampled to the model's rate,
  the last `window_s` seconds ending at the sample time (zeros in front when short), then a causal
  log-mel spectrogram (1, n_mels, frames);
- taxels (TactileArray), sensor units: with a window (`window_s` > 0), the frames stamped in
  [t - window_s, t) averaged into the `taxel_steps` bins of the `grid_hz` grid (bin k covers
  [t - window_s + k dt, t - window_s + (k + 1) dt)); an empty bin holds the bin before it, empty
  leading bins the first filled one; shape (channels, steps, rows * cols), taxels in row-major
  order. With `window_s: 0`, the newest frame: (rows, cols, channels) -> (channels, rows, cols).

Then, when stats are given, z-scored per channel. Bad input raises `InputError` with a stable
reason: 'encoding', 'size', 'nan', 'sample_rate', 'decode', 'type', 'empty', 'too_large'
(limits: core/frames.py MAX_*, and the audio limits below).
"""
from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from typing import Any, Sequence

import cv2
import numpy as np

from llmos_ros.config import ModalityConfig, audio_frames, taxel_steps
from llmos_ros.core.frames import (
    MAX_IMAGE_PIXELS,
    AudioFrame,
    CompressedFrame,
    Frame,
    ImageFrame,
    TactileFrame,
)
from llmos_ros.errors import InputError

# AudioChunk sample rates outside [MIN, MAX] are refused ('sample_rate'), chunks longer than
# MAX_CHUNK_S or with more than MAX_CHANNELS channels too ('too_large'): this bounds the
# resampler's work per chunk. A rate whose exact ratio to the model's needs more than MAX_PHASES
# filter phases is resampled at the nearest ratio with at most MAX_PHASES (rate error < 0.01 %),
# which bounds each filter table to MAX_PHASES x 2 * ceil(16 * MAX_SAMPLE_RATE / model rate).
MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 384_000
MAX_CHUNK_S = 2.0
MAX_CHANNELS = 64
MAX_PHASES = 1024
LOG_FLOOR = 1e-6  # added to mel power before the log
STD_FLOOR = 1e-6  # a channel with a smaller std is not scaled (std stored as 1)

# encoding -> (channels, bytes per channel, colour order); aliases as cv_bridge uses them
_ENCODINGS = {
    'rgb8': (3, 1, 'rgb'), 'bgr8': (3, 1, 'bgr'), 'rgba8': (4, 1, 'rgb'), 'bgra8': (4, 1, 'bgr'),
    'mono8': (1, 1, 'mono'), 'mono16': (1, 2, 'mono'),
    '8uc1': (1, 1, 'mono'), '8uc3': (3, 1, 'bgr'), '8uc4': (4, 1, 'bgr'), '16uc1': (1, 2, 'mono'),
}


# ---------------------------------------------------------------------------------------------
# images

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


# ---------------------------------------------------------------------------------------------
# audio

def resample(x: np.ndarray, src_rate: int, dst_rate: int, half_taps: int = 16) -> np.ndarray:
    """
    Resample a 1-D signal from src_rate to dst_rate (windowed-sinc, Kaiser window).

    Equal rates return the input unchanged (exact). The output has round(len * dst / src)
    samples; output sample n is at input time n * src / dst.
    """
    x = np.asarray(x, dtype=np.float32)
    if src_rate == dst_rate or x.size == 0:
        return x.copy()
    ratio = resample_ratio(src_rate, dst_rate)
    n_out = int(round(x.size * ratio.numerator / ratio.denominator))
    cutoff = min(1.0, dst_rate / src_rate)  # of the input Nyquist
    half = int(np.ceil(half_taps / cutoff))
    offsets, weights, base = _sinc_table(ratio.numerator, ratio.denominator, half, cutoff)
    out = np.empty(n_out, np.float32)
    padded = np.concatenate([np.zeros(half, np.float32), x, np.zeros(half + 1, np.float32)])
    period = ratio.numerator  # output samples per repeat of the phase pattern
    n = np.arange(n_out)
    phase = n % period
    idx = base[phase] + (n // period) * ratio.denominator + half  # into padded
    # chunked to bound memory: (block, taps)
    for start in range(0, n_out, 4096):
        sl = slice(start, min(n_out, start + 4096))
        taps = padded[idx[sl, None] + offsets[None, :]]
        out[sl] = np.einsum('ij,ij->i', taps, weights[phase[sl]])
    return out


def resample_ratio(src_rate: int, dst_rate: int) -> Fraction:
    """dst/src as used: exact, or the nearest ratio with at most MAX_PHASES filter phases."""
    ratio = Fraction(int(dst_rate), int(src_rate))
    if ratio.numerator > MAX_PHASES:
        ratio = 1 / (1 / ratio).limit_denominator(MAX_PHASES)
    return ratio


@lru_cache(maxsize=8)
def _sinc_table(up: int, down: int, half: int, cutoff: float):
    """Filter weights for each of the `up` phases: output n = up*q + p at input (n*down)/up."""
    p = np.arange(up)
    pos = p * down / up  # fractional input position of phase p
    base = np.floor(pos).astype(np.int64)
    frac = pos - base
    offsets = np.arange(-half + 1, half + 1)
    d = frac[:, None] - offsets[None, :]  # distance from each tap
    win = np.kaiser(2 * half + 1, 8.0)
    win_vals = np.interp(d, np.arange(-half, half + 1), win, left=0.0, right=0.0)
    weights = cutoff * np.sinc(cutoff * d) * win_vals
    weights /= weights.sum(axis=1, keepdims=True)
    return offsets, weights.astype(np.float32), base


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


@lru_cache(maxsize=16)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Triangular HTK-mel filters, (n_mels, n_fft // 2 + 1), 0 Hz .. Nyquist, peak 1."""
    freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2.0), n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None, :] - lo) / np.maximum(mid - lo, 1e-9)
    down = (hi - freqs[None, :]) / np.maximum(hi - mid, 1e-9)
    fb = np.maximum(0.0, np.minimum(up, down))
    return fb.astype(np.float32)


def stft_sizes(mod: ModalityConfig) -> tuple[int, int, int]:
    """(window samples, hop, n_fft) of an audio modality at its model rate."""
    n = int(round(mod.window_s * mod.sample_rate))
    hop = max(1, int(round(mod.hop_s * mod.sample_rate)))
    n_fft = 1 << int(np.ceil(np.log2(max(2, 2 * hop))))
    return n, hop, n_fft


def log_mel(x: np.ndarray, mod: ModalityConfig) -> np.ndarray:
    """
    Causal log-mel spectrogram of one window at the model rate -> (1, n_mels, frames).

    Frame i ends at sample (i + 1) * hop and spans n_fft samples (zeros before the window).
    """
    _, hop, n_fft = stft_sizes(mod)
    frames = audio_frames(mod)
    need = frames * hop
    x = np.asarray(x, np.float32)[-need:] if x.size >= need else np.concatenate(
        [np.zeros(need - x.size, np.float32), np.asarray(x, np.float32)])
    padded = np.concatenate([np.zeros(n_fft - hop, np.float32), x])
    segs = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:frames]
    spec = np.fft.rfft(segs * _hann(n_fft), axis=1)
    power = (spec.real ** 2 + spec.imag ** 2).astype(np.float32)
    mel = power @ mel_filterbank(int(mod.sample_rate), n_fft, int(mod.n_mels)).T
    return np.log(mel + np.float32(LOG_FLOOR)).T[None].astype(np.float32)


def log_mel_to_waveform(spec: np.ndarray, mod: ModalityConfig, n_iter: int = 16,
                        seed: int = 0) -> np.ndarray:
    """
    A waveform whose log-mel (as `log_mel` computes it) approximates `spec` (1, n_mels, frames).

    Pseudo-inverse of the mel filterbank, then Griffin-Lim phase recovery on the same causal
    frames; for publishing audio predictions, which are spectrograms in the model.
    """
    _, hop, n_fft = stft_sizes(mod)
    fb = mel_filterbank(int(mod.sample_rate), n_fft, int(mod.n_mels))
    mel = np.maximum(np.exp(np.asarray(spec, np.float64).reshape(fb.shape[0], -1))
                     - LOG_FLOOR, 0.0)
    mag = np.sqrt(np.maximum(np.linalg.pinv(fb) @ mel, 0.0)).T  # (frames, bins)
    frames = mag.shape[0]
    win = _hann(n_fft).astype(np.float64)
    length = (frames - 1) * hop + n_fft
    starts = np.arange(frames) * hop
    idx = starts[:, None] + np.arange(n_fft)[None, :]
    norm = np.zeros(length)
    np.add.at(norm, idx, np.broadcast_to(win * win, idx.shape))
    norm = np.maximum(norm, 1e-8)
    phase = np.exp(2j * np.pi * np.random.default_rng(seed).random(mag.shape))
    y = np.zeros(length)
    for _ in range(max(1, n_iter)):
        y = np.zeros(length)
        np.add.at(y, idx, np.fft.irfft(mag * phase, n=n_fft, axis=1) * win)
        y /= norm
        spec_y = np.fft.rfft(y[idx] * win, axis=1)
        phase = np.exp(1j * np.angle(spec_y))
    return y[n_fft - hop:].astype(np.float32)  # drop the zeros before the window


@lru_cache(maxsize=16)
def _hann(n: int) -> np.ndarray:
    return np.hanning(n + 1)[:-1].astype(np.float32)  # periodic


def _check_audio(fr: AudioFrame) -> None:
    if not isinstance(fr, AudioFrame):
        raise InputError('type', f'expected an audio chunk, got {type(fr).__name__}')
    rate, ch = int(fr.sample_rate), int(fr.channels)
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise InputError('sample_rate', f'audio sample_rate {rate} is not usable (supported: '
                         f'{MIN_SAMPLE_RATE} .. {MAX_SAMPLE_RATE} Hz)')
    if ch > MAX_CHANNELS:
        raise InputError('too_large', f'audio chunk has {ch} channels (at most {MAX_CHANNELS})')
    if ch > 0 and fr.samples.size > MAX_CHUNK_S * rate * ch:
        raise InputError('too_large', f'audio chunk of {fr.samples.size // ch} frames at {rate} '
                         f'Hz is longer than {MAX_CHUNK_S} s')
    if ch <= 0 or fr.samples.size % ch:
        raise InputError('size', f'audio chunk of {fr.samples.size} samples does not hold '
                         f'whole frames of {ch} channels')
    if not np.isfinite(fr.samples).all():
        raise InputError('nan', 'audio chunk holds NaN or inf samples')


def audio_window(window: Sequence[AudioFrame], mod: ModalityConfig,
                 stamp_ns: int | None = None) -> np.ndarray:
    """
    The last window_s seconds before stamp_ns at the model rate (mono float32, zeros in front).

    Chunks are taken as contiguous; the end of the newest chunk anchors the time line. With
    stamp_ns None the window ends at the end of the newest chunk.
    """
    parts: list[tuple[int, np.ndarray]] = []  # (rate, mono samples)
    for fr in window:
        _check_audio(fr)
        rate, ch = int(fr.sample_rate), int(fr.channels)
        s = np.asarray(fr.samples, dtype=np.float32).ravel()
        mono = s if ch == 1 else s.reshape(-1, ch).mean(axis=1, dtype=np.float32)
        if parts and parts[-1][0] == rate:
            parts[-1][1].append(mono)
        else:
            parts.append((rate, [mono]))
    n_win, _, _ = stft_sizes(mod)
    dst = int(mod.sample_rate)
    if not parts:
        return np.zeros(n_win, np.float32)
    cut_s = 0.0
    if stamp_ns is not None:
        cut_s = max(0.0, (window[-1].end_ns - int(stamp_ns)) * 1e-9)  # audio after the sample
    pieces = []
    for i, (rate, chunks) in enumerate(parts):
        sig = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
        if i == len(parts) - 1 and cut_s > 0:
            cut = int(round(cut_s * rate))
            sig = sig[:max(0, sig.size - cut)]
        # keep a little more than the window so the resampler has context at the start
        keep = int(np.ceil(mod.window_s * rate)) + 64
        sig = sig[-keep:]
        pieces.append(resample(sig, rate, dst) if rate != dst else sig)
    sig = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
    if sig.size >= n_win:
        return np.ascontiguousarray(sig[-n_win:])
    return np.concatenate([np.zeros(n_win - sig.size, np.float32), sig])


# ---------------------------------------------------------------------------------------------
# taxel windows

def taxel_window(values: Sequence[np.ndarray], stamps_ns: Sequence[int], mod: ModalityConfig,
                 stamp_ns: int | None = None) -> np.ndarray:
    """
    Taxel frames (each (channels, rows, cols)) of [t - window_s, t) -> (channels, steps, taxels).

    t is stamp_ns (None: 1 ns after the newest frame). Frames outside the window are ignored;
    frames in one bin of the grid are averaged; see the module doc for empty bins.
    """
    steps = taxel_steps(mod)
    t = int(stamp_ns) if stamp_ns is not None else int(max(stamps_ns)) + 1
    span = int(round(mod.window_s * 1e9))
    lo = t - span
    ch, n = int(mod.channels), int(mod.rows) * int(mod.cols)
    sums = np.zeros((steps, ch, n), np.float64)
    counts = np.zeros(steps, np.int64)
    for vals, stamp in zip(values, stamps_ns):
        if lo <= stamp < t:
            k = min(steps - 1, (int(stamp) - lo) * steps // span)
            sums[k] += np.asarray(vals, np.float64).reshape(ch, n)
            counts[k] += 1
    filled = np.flatnonzero(counts)
    if filled.size == 0:
        raise InputError('empty', f'modality {mod.name}: no taxel frame in the window')
    out = sums / np.maximum(counts, 1)[:, None, None]
    # zero-order hold: each bin takes the newest filled bin at or before it (the first for
    # leading empties)
    src = np.maximum.accumulate(np.where(counts > 0, np.arange(steps), -1))
    src[src < 0] = filled[0]
    return np.ascontiguousarray(out[src].transpose(1, 0, 2), dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# stats

def compute_stats(arrays) -> dict[str, list[float]]:
    """
    Per-channel mean and std of model arrays: (N, C, ...) array or a list of (C, ...) arrays.

    Returns {'mean': [C floats], 'std': [C floats]} (plain floats, checkpoint friendly); a
    channel with std below STD_FLOOR gets std 1.
    """
    if isinstance(arrays, np.ndarray):
        a = arrays
    else:
        arrays = list(arrays)
        if not arrays:
            raise ValueError('compute_stats needs at least one array')
        a = np.stack(arrays)
    if a.ndim < 2 or a.shape[0] == 0:
        raise ValueError('compute_stats needs an (N, C, ...) array with N > 0')
    axes = tuple(i for i in range(a.ndim) if i != 1)
    mean = a.mean(axis=axes, dtype=np.float64)
    sq = np.square(a - mean.reshape((1, -1) + (1,) * (a.ndim - 2)).astype(a.dtype))
    std = np.sqrt(sq.mean(axis=axes, dtype=np.float64))
    std = np.where(std < STD_FLOOR, 1.0, std)
    return {'mean': [float(v) for v in mean], 'std': [float(v) for v in std]}


def apply_stats(array: np.ndarray, stats: dict[str, Any] | None,
                batched: bool = False) -> np.ndarray:
    """Z-score a (C, ...) array (or (N, C, ...) with batched) per channel; None: unchanged."""
    if not stats:
        return array
    mean, std = _stat_arrays(stats, array.ndim, 1 if batched else 0)
    return ((array - mean) / std).astype(np.float32, copy=False)


def invert_stats(array: np.ndarray, stats: dict[str, Any] | None,
                 batched: bool = False) -> np.ndarray:
    """Undo `apply_stats`."""
    array = np.asarray(array, np.float32)
    if not stats:
        return array
    mean, std = _stat_arrays(stats, array.ndim, 1 if batched else 0)
    return (array * std + mean).astype(np.float32, copy=False)


def _stat_arrays(stats, ndim: int, c_axis: int):
    mean = np.asarray(stats['mean'], np.float32).ravel()
    std = np.asarray(stats['std'], np.float32).ravel()
    shape = [1] * ndim
    shape[c_axis] = mean.size
    return mean.reshape(shape), std.reshape(shape)


# ---------------------------------------------------------------------------------------------

class Preprocessor:
    """
    Frames of one modality -> float32 array of `mod.shape()`, optionally z-scored.

    `stats` is {'mean': [...], 'std': [...]} for this modality, or a dict of those keyed by
    modality name (as stored in a checkpoint); None leaves the arrays unnormalised.
    """

    def __init__(self, mod: ModalityConfig, stats: dict | None = None):
        self.mod = mod
        if stats and 'mean' not in stats:
            stats = stats.get(mod.name)
        self.stats = stats or None
        self.shape = tuple(mod.shape())
        if self.stats is not None:
            n = len(np.asarray(self.stats['mean']).ravel())
            if n != self.shape[0]:
                raise ValueError(f'modality {mod.name}: stats for {n} channels, model has '
                                 f'{self.shape[0]}')

    def validate(self, frame: Frame) -> None:
        """
        Cheap checks of one frame before it is paired (no decoding): InputError if unusable.

        The live node and the dataset drop a bad frame here, so it never spoils the windows
        of later samples (an audio window spans many chunks).
        """
        kind = self.mod.kind
        if kind == 'image':
            if isinstance(frame, CompressedFrame):
                _compressed_kind(frame)
            else:
                _check_image(frame)
        elif kind == 'audio':
            _check_audio(frame)
        else:
            self._taxels(frame)

    def raw(self, window: Sequence[Frame], stamp_ns: int | None = None) -> np.ndarray:
        """The model array before normalisation."""
        if not window:
            raise InputError('empty', f'modality {self.mod.name}: empty window')
        kind = self.mod.kind
        if kind == 'image':
            out = _image_to_model(decode_image(window[-1]), self.mod)
        elif kind == 'audio':
            out = log_mel(audio_window(window, self.mod, stamp_ns), self.mod)
        elif kind == 'taxels' and self.mod.window_s > 0:
            out = taxel_window([self._taxels(fr) for fr in window],
                               [int(fr.stamp_ns) for fr in window], self.mod, stamp_ns)
        elif kind == 'taxels':
            out = self._taxels(window[-1])
        else:
            raise InputError('type', f'modality {self.mod.name}: unknown kind {kind!r}')
        return out

    def __call__(self, window: Sequence[Frame], stamp_ns: int | None = None) -> np.ndarray:
        """
        Preprocess one window (the frames the synchronizer paired for this modality).

        stamp_ns is the sample time; audio windows end there (causal). Raises InputError.
        """
        return apply_stats(self.raw(window, stamp_ns), self.stats)

    def inverse(self, array: np.ndarray) -> np.ndarray:
        """
        Model-space array -> raw range, same shape, float32 (for publishing predictions).

        Images come back in [0, 255] (channels, height, width); audio as log-mel; taxels in
        sensor units, (channels, rows, cols) (of a window: its newest step).
        """
        out = invert_stats(np.asarray(array, np.float32), self.stats)
        if self.mod.kind == 'taxels' and self.mod.window_s > 0:
            out = out[:, -1, :].reshape(self.mod.channels, self.mod.rows, self.mod.cols)
        if self.mod.kind == 'image':
            out = np.clip(out * np.float32(255.0), 0.0, 255.0)
        return out.astype(np.float32, copy=False)

    def _taxels(self, fr) -> np.ndarray:
        if not isinstance(fr, TactileFrame):
            raise InputError('type', f'expected a taxel array, got {type(fr).__name__}')
        m = self.mod
        rows, cols, ch = int(fr.rows), int(fr.cols), int(fr.channels)
        vals = np.asarray(fr.values, dtype=np.float32).ravel()
        if vals.size != rows * cols * ch:
            raise InputError('size', f'taxel array holds {vals.size} values, expected rows {rows}'
                             f' x cols {cols} x channels {ch} = {rows * cols * ch}')
        if (rows, cols, ch) != (m.rows, m.cols, m.channels):
            raise InputError('size', f'taxel array is {rows}x{cols}x{ch}, the model expects '
                             f'{m.rows}x{m.cols}x{m.channels}')
        if not np.isfinite(vals).all():
            raise InputError('nan', 'taxel array holds NaN or inf values')
        return np.ascontiguousarray(vals.reshape(rows, cols, ch).transpose(2, 0, 1))
