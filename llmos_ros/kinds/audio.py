"""
Kind 'audio': a causal window of microphone audio as a log-mel spectrogram (1, n_mels, frames).

Reads llmos_ros/AudioChunk at any sample rate. Paired as the chunks overlapping
[t - window_s, t). Preprocessing: the window's chunks concatenated, downmixed, resampled to the
model's rate (windowed sinc), the last `window_s` seconds ending at the sample time (zeros in
front when short), then a causal log-mel spectrogram. Predictions are published as the
Griffin-Lim waveform of the model's window at its rate. Bad input raises InputError
'type', 'sample_rate', 'size', 'nan' or 'too_large'. Drawn as spectrograms.

Default window 1.5 s: a spoken word or a contact sound lasts up to about 1 s, and the frame that
shows its cause can come up to about 0.5 s after it ends, so a window ending at a camera frame
holds the whole event; a longer one mixes in the event before it.

Default likelihood 'time_shift' (`Kind.likelihoods`): where in a causal window the word or the
contact sound falls depends on when the window was taken, which no other sensor tells, so the
decoder draws the sound once and the likelihood marginalises its position over every circular
shift of the window's frames. A Gaussian around the window itself can only predict the average
over positions, a blur: on avmnist camera -> audio coherence 0.10 (chance) against 0.81 (README,
"What each change did"). Predictions (`llmos/prediction/audio`) then hold the sound the model
expects with its timing at the model's own position in the window, not at the input's.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from llmos_ros.core.frames import Frame, check_limit, header_fields
from llmos_ros.core.messages import Flavour, array_field, header
from llmos_ros.errors import InputError
from llmos_ros.kinds.base import Kind

if TYPE_CHECKING:
    from llmos_ros.config import ModalityConfig

AUDIO_CHUNK = 'llmos_ros/msg/AudioChunk'
MAX_AUDIO_VALUES = 4 * 1024 * 1024  # samples x channels of one message, checked before a copy
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
PICTURE_N_FFT = 256  # FFT size of the debug picture's spectrogram


@dataclass(frozen=True)
class AudioFrame(Frame):
    """One llmos_ros/AudioChunk."""

    stamp_ns: int  # capture time of the first sample
    sample_rate: int
    channels: int
    samples: np.ndarray  # float32, flat, interleaved
    frame_id: str = ''

    @property
    def n_frames(self) -> int:
        """Samples per channel."""
        return int(self.samples.size // max(self.channels, 1))

    @property
    def end_ns(self) -> int:
        """Stamp just after the last sample (start of the next chunk)."""
        if self.sample_rate <= 0:
            return self.stamp_ns
        return self.stamp_ns + int(round(self.n_frames * 1e9 / self.sample_rate))


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
    inverse = _mel_inverse(int(mod.sample_rate), n_fft, int(mod.n_mels))
    mel = np.maximum(np.exp(np.asarray(spec, np.float64).reshape(inverse.shape[1], -1))
                     - LOG_FLOOR, 0.0)
    mag = np.sqrt(np.maximum(inverse @ mel, 0.0)).T  # (frames, bins)
    frames = mag.shape[0]
    win, idx, norm = _overlap_add(frames, hop, n_fft)
    phase = np.exp(2j * np.pi * np.random.default_rng(seed).random(mag.shape))
    for _ in range(max(1, n_iter)):  # overlap-add: bincount sums in np.add.at's order
        frames_y = np.fft.irfft(mag * phase, n=n_fft, axis=1) * win
        y = np.bincount(idx.ravel(), weights=frames_y.ravel(), minlength=norm.size) / norm
        spec_y = np.fft.rfft(y[idx] * win, axis=1)
        size = np.abs(spec_y)  # unit phasors: exp(1j * angle), 1 where a bin is 0
        phase = np.divide(spec_y, size, out=np.ones_like(spec_y), where=size > 0)
    return y[n_fft - hop:].astype(np.float32)  # drop the zeros before the window


@lru_cache(maxsize=16)
def _mel_inverse(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Pseudo-inverse of the mel filterbank, (bins, n_mels); read-only."""
    inverse = np.linalg.pinv(mel_filterbank(sample_rate, n_fft, n_mels))
    inverse.flags.writeable = False
    return inverse


@lru_cache(maxsize=16)
def _overlap_add(frames: int, hop: int, n_fft: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    Window, sample index [frames, n_fft] of each frame's samples, and the window-square sum.

    The sum (at least 1e-8) normalises an overlap-add of windowed frames; arrays are read-only.
    """
    win = _hann(n_fft).astype(np.float64)
    idx = (np.arange(frames) * hop)[:, None] + np.arange(n_fft)[None, :]
    norm = np.maximum(np.bincount(idx.ravel(), weights=np.tile(win * win, frames),
                                  minlength=(frames - 1) * hop + n_fft), 1e-8)
    for a in (win, idx, norm):
        a.flags.writeable = False
    return win, idx, norm


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


def audio_frames(mod: ModalityConfig) -> int:
    """Number of spectrogram frames in one window (centre-free STFT, one frame per hop)."""
    hop = max(1, int(round(mod.hop_s * mod.sample_rate)))
    return max(1, int(round(mod.window_s * mod.sample_rate)) // hop)


class AudioKind(Kind):
    """Microphone audio (module doc)."""

    name = 'audio'
    message_types = (AUDIO_CHUNK,)
    prediction_type = AUDIO_CHUNK
    default_window_s = 1.5
    frame_types = (AudioFrame,)
    spans_time = True
    reference_rank = 2
    time_frequency = True
    picture_span_s = 1.0
    likelihoods = ('time_shift', 'gaussian')

    def frame_from_msg(self, msg_type: str, msg: Any) -> Frame:
        """An AudioChunk, its samples as float32 (size checked before the copy)."""
        check_limit('audio chunk values', len(msg.samples), MAX_AUDIO_VALUES)
        stamp, frame_id = header_fields(msg)
        return AudioFrame(stamp, int(msg.sample_rate), int(msg.channels),
                          np.asarray(msg.samples, dtype=np.float32).ravel(), frame_id)

    def frame_message(self, frame: Frame, flavour: Flavour) -> tuple[str, Any]:
        """An AudioChunk."""
        return AUDIO_CHUNK, flavour.message_class(AUDIO_CHUNK)(
            header=header(frame.stamp_ns, frame.frame_id, flavour),
            sample_rate=int(frame.sample_rate), channels=int(frame.channels),
            samples=array_field(frame.samples, np.float32, flavour))

    def windowed(self, mod: ModalityConfig) -> bool:
        """Audio is always a window of chunks."""
        return True

    def shift_reach(self, mod: ModalityConfig) -> tuple[int | None, ...] | None:
        """'time_shift': every circular shift of the time axis."""
        return (None,) if mod.likelihood == 'time_shift' else None

    def shape(self, mod: ModalityConfig) -> tuple[int, ...]:
        """(1, n_mels, frames)."""
        return (1, mod.n_mels, audio_frames(mod))

    def validate(self, mod: ModalityConfig, frame: Frame) -> None:
        """Rate, channels, size and finiteness of one chunk."""
        _check_audio(frame)

    def preprocess(self, mod: ModalityConfig, window: Sequence[Frame],
                   stamp_ns: int | None) -> np.ndarray:
        """Log-mel spectrogram of the window_s seconds before stamp_ns."""
        return log_mel(audio_window(window, mod, stamp_ns), mod)

    def prediction_frame(self, mod: ModalityConfig, raw: np.ndarray, stamp_ns: int,
                         frame_id: str, iterations: int = 4) -> Frame:
        """A mono chunk at the model's rate: Griffin-Lim of the predicted spectrogram."""
        wave = log_mel_to_waveform(raw, mod, n_iter=iterations)
        return AudioFrame(stamp_ns, int(mod.sample_rate), 1, wave, frame_id)

    def frames_picture(self, frames: Sequence[Frame]) -> np.ndarray:
        """
        Consecutive chunks (first channel) as a spectrogram in dB, (frequency, time).

        Frequency bins run upwards (row 0 lowest), about 128 columns of time.
        """
        samples = np.concatenate([np.asarray(f.samples, np.float32).reshape(
            -1, max(f.channels, 1))[:, 0] for f in frames])
        n = PICTURE_N_FFT
        samples = np.pad(samples, (0, max(0, n - samples.size)))
        hop = max(n // 4, (samples.size - n) // 128 or 1)
        window = _hann(n)
        spec = np.abs(np.stack([np.fft.rfft(samples[s:s + n] * window)
                                for s in range(0, samples.size - n + 1, hop)], 1))
        return 20.0 * np.log10(spec + 1e-6)

    def from_topic(self, msg_type: str, frame: Frame) -> dict:
        """The model runs at the sample rate of the first chunk."""
        return {'sample_rate': int(frame.sample_rate)}
