"""Preprocessor: every image encoding, compressed images, audio, taxels, bad inputs, stats."""
import cv2
import numpy as np
import pytest

from llmos_ros.config import ModalityConfig
from llmos_ros.core.preprocess import Preprocessor, compute_stats
from llmos_ros.errors import InputError
from llmos_ros.kinds.audio import AudioFrame, audio_window, log_mel, resample
from llmos_ros.kinds.image import CompressedFrame, ImageFrame
from llmos_ros.kinds.taxels import TactileFrame

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)  # H=5, W=7


def image_mod(h=5, w=7, c=3):
    return ModalityConfig('camera', 'image', '/camera/image_raw', 'sensor_msgs/msg/Image',
                          height=h, width=w, channels=c)


def audio_mod(rate=8000, **kw):
    return ModalityConfig('audio', 'audio', '/microphone/audio', 'llmos_ros/msg/AudioChunk',
                          sample_rate=rate, **kw)


def taxel_mod(rows=3, cols=4, ch=2, window_s=0.0, grid_hz=100.0):
    return ModalityConfig('tactile', 'taxels', '/tactile/array', 'llmos_ros/msg/TactileArray',
                          rows=rows, cols=cols, channels=ch, window_s=window_s, grid_hz=grid_hz)


def raw_frame(pixels: np.ndarray, encoding: str, pad: int = 3, bigendian=False) -> ImageFrame:
    """An Image frame with `pad` bytes of row padding."""
    h, w = pixels.shape[:2]
    row = pixels.reshape(h, -1).view(np.uint8).reshape(h, -1)
    step = row.shape[1] + pad
    data = np.zeros((h, step), np.uint8)
    data[:, :row.shape[1]] = row
    data[:, row.shape[1]:] = 77  # padding must be ignored
    return ImageFrame(1, encoding, h, w, step, bigendian, data.ravel())


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'rgba8', 'bgra8'])
def test_colour_encodings_decode_to_rgb(encoding):
    px = RGB[:, :, ::-1] if encoding.startswith('bgr') else RGB
    if encoding.endswith('a8'):
        px = np.concatenate([px, np.full((5, 7, 1), 9, np.uint8)], axis=2)
    out = Preprocessor(image_mod())([raw_frame(np.ascontiguousarray(px), encoding)])
    assert out.shape == (3, 5, 7) and out.dtype == np.float32
    np.testing.assert_allclose(out, RGB.transpose(2, 0, 1) / 255.0, atol=1e-6)


def test_mono8_and_channel_conversion():
    grey = RGB[:, :, 0]
    fr = raw_frame(np.ascontiguousarray(grey), 'mono8')
    np.testing.assert_allclose(Preprocessor(image_mod(c=1))([fr])[0], grey / 255.0, atol=1e-6)
    out3 = Preprocessor(image_mod(c=3))([fr])
    for c in range(3):
        np.testing.assert_allclose(out3[c], grey / 255.0, atol=1e-6)
    # rgb -> mono uses the usual luma weights
    mono = Preprocessor(image_mod(c=1))([raw_frame(RGB, 'rgb8')])[0]
    expect = cv2.cvtColor(RGB, cv2.COLOR_RGB2GRAY) / 255.0
    np.testing.assert_allclose(mono, expect, atol=1 / 255.0)


@pytest.mark.parametrize('bigendian', [False, True])
def test_mono16_both_endians(bigendian):
    vals = RNG.integers(0, 65536, (5, 7), dtype=np.uint16)
    px = vals.astype('>u2' if bigendian else '<u2')
    out = Preprocessor(image_mod(c=1))([raw_frame(px, 'mono16', pad=2, bigendian=bigendian)])
    np.testing.assert_allclose(out[0], vals / 65535.0, atol=1e-6)


def test_resize_uses_area_average():
    img = np.kron(np.arange(16, dtype=np.uint8).reshape(4, 4) * 10, np.ones((2, 2), np.uint8))
    out = Preprocessor(image_mod(4, 4, 1))([raw_frame(img, 'mono8', pad=0)])
    np.testing.assert_allclose(out[0], np.arange(16).reshape(4, 4) * 10 / 255.0, atol=1e-6)


def test_compressed_png_exact_and_jpeg_close():
    ok, png = cv2.imencode('.png', RGB[:, :, ::-1])
    assert ok
    out = Preprocessor(image_mod())([CompressedFrame(1, 'rgb8; png compressed bgr8', png.ravel())])
    np.testing.assert_allclose(out, RGB.transpose(2, 0, 1) / 255.0, atol=1e-6)
    smooth = cv2.resize(RGB, (64, 48), interpolation=cv2.INTER_CUBIC)
    smooth = cv2.GaussianBlur(smooth, (7, 7), 3)
    ok, jpg = cv2.imencode('.jpg', smooth[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    out = Preprocessor(image_mod(48, 64))([CompressedFrame(1, 'jpeg', jpg.ravel())])
    assert np.abs(out - smooth.transpose(2, 0, 1) / 255.0).mean() < 0.02


def test_resample_keeps_frequency_and_equal_rate_is_exact():
    for src, dst in ((44100, 16000), (8000, 16000), (48000, 22050)):
        t = np.arange(src) / src
        y = resample(np.sin(2 * np.pi * 440 * t).astype(np.float32), src, dst)
        assert y.size == dst
        freqs = np.fft.rfftfreq(y.size, 1 / dst)
        assert abs(freqs[np.argmax(np.abs(np.fft.rfft(y)))] - 440) <= 1
        assert 0.9 < np.abs(y[dst // 4: -dst // 4]).max() < 1.1
    x = RNG.standard_normal(1000).astype(np.float32)
    np.testing.assert_array_equal(resample(x, 16000, 16000), x)


def chunks(signal, rate, start_ns=0, n=800, channels=1):
    out = []
    for i in range(0, signal.size // channels, n):
        out.append(AudioFrame(start_ns + int(round(i * 1e9 / rate)), rate, channels,
                              signal[i * channels:(i + n) * channels].astype(np.float32)))
    return out


def test_audio_window_is_causal_padded_and_downmixed():
    mod = audio_mod(8000, window_s=1.0)
    sig = np.arange(1, 8001, dtype=np.float32)  # 1 s, 10 chunks
    win = chunks(sig, 8000)
    # sample at 0.55 s: the last chunk reaches 0.6 s; audio after 0.55 s is not used
    w = audio_window(win[:6], mod, stamp_ns=550_000_000)
    assert w.size == 8000
    np.testing.assert_array_equal(w[-4400:], sig[:4400])
    assert not w[:-4400].any()  # zeros in front
    stereo = np.stack([sig, -sig + 2], axis=1).ravel()  # mean is 1 everywhere
    w = audio_window(chunks(stereo, 8000, channels=2), mod)
    np.testing.assert_allclose(w, 1.0)


def test_log_mel_shape_and_peak():
    mod = audio_mod(16000, window_s=1.0, n_mels=40, hop_s=0.01)
    t = np.arange(16000) / 16000
    spec = log_mel(np.sin(2 * np.pi * 1000 * t).astype(np.float32), mod)
    assert spec.shape == mod.shape() == (1, 40, 100)
    assert spec.dtype == np.float32
    loud = spec[0, :, 50:].mean(axis=1).argmax()
    out = Preprocessor(mod)(chunks(np.zeros(4000, np.float32), 22050, n=1024), 10**9)
    assert out.shape == mod.shape() and np.isfinite(out).all()
    assert 0 < loud < 39  # a 1 kHz tone lands in a middle band


def test_taxels_to_channels_first():
    vals = np.arange(24, dtype=np.float32)
    out = Preprocessor(taxel_mod())([TactileFrame(1, 3, 4, 2, vals)])
    np.testing.assert_array_equal(out, vals.reshape(3, 4, 2).transpose(2, 0, 1))


def _reason(prep, frame, stamp=None):
    with pytest.raises(InputError) as info:
        prep([frame], stamp)
    return info.value.reason


def test_bad_inputs_give_stable_reasons():
    img = Preprocessor(image_mod())
    assert _reason(img, ImageFrame(1, 'yuv422', 5, 7, 14, False, np.zeros(70, np.uint8))) == \
        'encoding'
    assert _reason(img, CompressedFrame(1, 'tiff', np.ones(10, np.uint8))) == 'encoding'
    assert _reason(img, ImageFrame(1, 'rgb8', 5, 7, 21, False, np.zeros(100, np.uint8))) == 'size'
    assert _reason(img, ImageFrame(1, 'rgb8', 5, 7, 20, False, np.zeros(100, np.uint8))) == 'size'
    assert _reason(img, CompressedFrame(1, 'jpeg', np.arange(50, dtype=np.uint8))) == 'decode'
    tax = Preprocessor(taxel_mod())
    assert _reason(tax, TactileFrame(1, 3, 4, 2, np.zeros(23, np.float32))) == 'size'
    assert _reason(tax, TactileFrame(1, 4, 3, 2, np.zeros(24, np.float32))) == 'size'
    bad = np.zeros(24, np.float32)
    bad[5] = np.nan
    assert _reason(tax, TactileFrame(1, 3, 4, 2, bad)) == 'nan'
    aud = Preprocessor(audio_mod())
    assert _reason(aud, AudioFrame(1, 0, 1, np.zeros(8, np.float32))) == 'sample_rate'
    assert _reason(aud, AudioFrame(1, 10**9, 1, np.zeros(8, np.float32))) == 'sample_rate'
    inf = np.zeros(8, np.float32)
    inf[3] = np.inf
    assert _reason(aud, AudioFrame(1, 8000, 1, inf)) == 'nan'
    assert _reason(aud, AudioFrame(1, 8000, 3, np.zeros(8, np.float32))) == 'size'


def test_stats_zscore_and_inverse():
    arrays = RNG.normal([[[2.0]], [[-1.0]], [[5.0]]], [[[3.0]], [[0.5]], [[1.0]]],
                        (2000, 3, 5, 7)).astype(np.float32)
    stats = compute_stats(arrays)
    assert isinstance(stats['mean'][0], float) and len(stats['std']) == 3
    np.testing.assert_allclose(stats['mean'], [2.0, -1.0, 5.0], atol=0.05)
    np.testing.assert_allclose(stats['std'], [3.0, 0.5, 1.0], rtol=0.05)
    prep = Preprocessor(image_mod(), {'camera': stats})
    frame = raw_frame(RGB, 'rgb8')
    raw = Preprocessor(image_mod())([frame])
    z = prep([frame])
    np.testing.assert_allclose(z[1], (raw[1] - stats['mean'][1]) / stats['std'][1], rtol=1e-5)
    np.testing.assert_allclose(prep.inverse(z), RGB.transpose(2, 0, 1), atol=1e-3)
    assert compute_stats(np.ones((4, 1, 2, 2), np.float32))['std'] == [1.0]


# ---- taxel windows ---------------------------------------------------------------------------

def _tax_frames(stamps_ms, rows=1, cols=2):
    """Frames whose every value is its stamp in ms (so bin averages are easy to check)."""
    return [TactileFrame(int(t * 1e6), rows, cols, 1, np.full(rows * cols, t, np.float32))
            for t in stamps_ms]


def test_taxel_window_averages_frames_into_grid_bins():
    mod = taxel_mod(rows=1, cols=2, ch=1, window_s=0.04, grid_hz=100.0)  # 4 bins of 10 ms
    assert mod.shape() == (1, 4, 2)
    # t = 100 ms: window [60, 100); 1 kHz-like frames, two in bin 1, one in bin 3, none in 0, 2
    frames = _tax_frames([55, 71, 75, 99, 100])  # 55 is before the window, 100 at t: unused
    out = Preprocessor(mod)(frames, 100 * 1_000_000)
    expect_bins = [73.0, 73.0, 73.0, 99.0]  # bin 0 leading empty <- bin 1; bin 2 holds bin 1
    np.testing.assert_allclose(out[0, :, 0], expect_bins)
    np.testing.assert_allclose(out[0, :, 1], expect_bins)


def test_taxel_window_layout_and_newest_step_inverse():
    mod = taxel_mod(rows=2, cols=3, ch=2, window_s=0.02, grid_hz=100.0)
    vals = np.arange(12, dtype=np.float32)  # (rows, cols, channels) row-major
    frame = TactileFrame(15_000_000, 2, 3, 2, vals)
    prep = Preprocessor(mod)
    out = prep([frame], 20_000_000)
    assert out.shape == (2, 2, 6)
    chw = vals.reshape(2, 3, 2).transpose(2, 0, 1)
    np.testing.assert_array_equal(out[:, 1, :], chw.reshape(2, 6))
    np.testing.assert_array_equal(prep.inverse(out), chw)  # newest step, (channels, rows, cols)


def test_taxel_window_without_frames_in_it_is_an_input_error():
    mod = taxel_mod(rows=1, cols=2, ch=1, window_s=0.04)
    with pytest.raises(InputError, match='no taxel frame in the window'):
        Preprocessor(mod)(_tax_frames([10]), 100 * 1_000_000)
