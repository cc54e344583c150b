"""Oversized and implausible inputs are refused by size, before they are copied or decoded."""
from fractions import Fraction
import struct
import zlib

import cv2
import numpy as np
import pytest

from llmos_ros.config import ModalityConfig
from llmos_ros.core import preprocess as P
from llmos_ros.core.bags import frame_to_msg, make_header, typestore
from llmos_ros.errors import InputError
from llmos_ros.kinds import audio as A
from llmos_ros.kinds import frame_from_msg
from llmos_ros.kinds import image as IMG
from llmos_ros.kinds.audio import AUDIO_CHUNK, MAX_AUDIO_VALUES, AudioFrame
from llmos_ros.kinds.image import (
    COMPRESSED_IMAGE,
    IMAGE,
    MAX_IMAGE_BYTES,
    CompressedFrame,
    ImageFrame,
)
from llmos_ros.kinds.taxels import MAX_TAXEL_VALUES, TACTILE_ARRAY, TactileFrame


def audio_mod():
    return ModalityConfig('audio', 'audio', '/microphone/audio', 'llmos_ros/msg/AudioChunk',
                          sample_rate=16000, window_s=0.5)


def png_bomb(width: int, height: int) -> bytes:
    """A real, valid PNG of width x height black grey pixels: ~100 KiB that decode to ~GiB."""
    def chunk(kind, body):
        return (struct.pack('>I', len(body)) + kind + body
                + struct.pack('>I', zlib.crc32(kind + body) & 0xFFFFFFFF))
    comp = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte 0 + zero pixels
    idat = b''.join(comp.compress(row) for _ in range(height)) + comp.flush()
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 0,
                                                                 0, 0, 0))
            + chunk(b'IDAT', idat) + chunk(b'IEND', b''))


def test_png_bomb_is_refused_from_its_header():
    data = np.frombuffer(png_bomb(12000, 12000), np.uint8)
    assert data.size < 1_000_000
    frame = CompressedFrame(1, 'png', data)
    prep = P.Preprocessor(ModalityConfig('camera', 'image', '/c', COMPRESSED_IMAGE,
                                         height=8, width=8, channels=1))
    with pytest.raises(InputError, match=r'declares 12000x12000 pixels.*not decoded') as info:
        prep.validate(frame)
    assert info.value.reason == 'too_large'
    with pytest.raises(InputError, match='not decoded'):
        IMG.decode_image(frame)


def test_header_sizes_of_real_png_and_jpeg():
    img = np.zeros((48, 80, 3), np.uint8)
    for ext in ('.png', '.jpg'):
        ok, buf = cv2.imencode(ext, img)
        assert ok and IMG.compressed_size(buf.ravel()) == (80, 48), ext
    assert IMG.compressed_size(np.frombuffer(b'GIF89a' + bytes(40), np.uint8)) is None


def test_huge_raw_image_is_refused_before_copy():
    store = typestore()
    data = np.zeros(8000 * 8000 * 3, np.uint8)  # 192 MB, pages never touched
    msg = store.types[IMAGE](header=make_header(1), height=8000, width=8000,
                               encoding='rgb8', is_bigendian=0, step=24000, data=data)
    with pytest.raises(InputError, match=r'image 8000x8000: pixels 64000000 is above the limit'):
        frame_from_msg(IMAGE, msg)
    lying = store.types[IMAGE](header=make_header(1), height=2, width=2, encoding='rgb8',
                                 is_bigendian=0, step=6, data=np.zeros(MAX_IMAGE_BYTES + 1,
                                                                       np.uint8))
    with pytest.raises(InputError, match='image data bytes'):
        frame_from_msg(IMAGE, lying)


def test_oversized_audio_and_taxel_messages_are_refused():
    _, msg = frame_to_msg(AudioFrame(1, 16000, 1, np.zeros(MAX_AUDIO_VALUES + 1,
                                                                np.float32)))
    with pytest.raises(InputError, match='audio chunk values'):
        frame_from_msg(AUDIO_CHUNK, msg)
    _, msg = frame_to_msg(TactileFrame(1, 1, 1, 1, np.zeros(MAX_TAXEL_VALUES + 1,
                                                                np.float32)))
    with pytest.raises(InputError, match='taxel values'):
        frame_from_msg(TACTILE_ARRAY, msg)


@pytest.mark.parametrize('rate, samples, channels, reason, match', [
    (1_000_000, 1000, 1, 'sample_rate', r'sample_rate 1000000 is not usable \(supported'),
    (1, 16, 1, 'sample_rate', 'sample_rate 1 is not usable'),
    (16000, 16000 * 3, 1, 'too_large', r'longer than 2.0 s'),
    (16000, 1600 * 100, 100, 'too_large', 'has 100 channels'),
])
def test_implausible_audio_chunks(rate, samples, channels, reason, match):
    prep = P.Preprocessor(audio_mod())
    with pytest.raises(InputError, match=match) as info:
        prep.validate(AudioFrame(1, rate, channels, np.zeros(samples, np.float32)))
    assert info.value.reason == reason


def test_odd_sample_rate_resamples_with_a_bounded_filter():
    mod = audio_mod()
    t = np.arange(38_399) / 38_399
    chunk = AudioFrame(0, 38_399, 1, np.sin(2 * np.pi * 440 * t).astype(np.float32))  # prime
    out = A.audio_window([chunk], mod)
    assert out.shape == (8000,) and np.isfinite(out).all()
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) * 16000 / out.size - 440) < 4  # pitch kept
    ratio = A.resample_ratio(38_399, 16000)
    assert ratio.numerator <= A.MAX_PHASES and abs(float(ratio) * 38_399 / 16000 - 1) < 1e-4
    assert A.resample_ratio(44100, 16000) == Fraction(160, 441)  # common rates stay exact


def test_resampled_length_matches_the_rate():
    x = np.zeros(38_399, np.float32)
    assert abs(A.resample(x, 38_399, 16000).size - 16000) <= 1


def test_a_plain_image_frame_is_unaffected():
    frame = ImageFrame(1, 'mono8', 2, 2, 2, False, np.zeros(4, np.uint8))
    _, msg = frame_to_msg(frame)
    assert frame_from_msg(IMAGE, msg).height == 2
