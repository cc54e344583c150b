"""The kind registry and each kind's interface: shape, validation, preprocessing, inverse."""
import numpy as np
import pytest

from llmos_ros import kinds
from llmos_ros.config import Config, ModalityConfig
from llmos_ros.core.frames import STRING
from llmos_ros.core.preprocess import Preprocessor
from llmos_ros.core.sync import reference_modality
from llmos_ros.errors import ConfigError, InputError
from llmos_ros.kinds.audio import AUDIO_CHUNK, AudioFrame
from llmos_ros.kinds.image import COMPRESSED_IMAGE, IMAGE, ImageFrame
from llmos_ros.kinds.taxels import TACTILE_ARRAY, TactileFrame
from llmos_ros.kinds.wrench import WRENCH_STAMPED, WrenchFrame

MS = 1_000_000


def test_registry_names_types_and_lookup():
    assert kinds.names() == ('image', 'audio', 'taxels', 'wrench')
    assert kinds.for_message_type(COMPRESSED_IMAGE) is kinds.get('image')
    assert kinds.for_message_type(AUDIO_CHUNK).name == 'audio'
    assert kinds.for_message_type(TACTILE_ARRAY).name == 'taxels'
    assert kinds.for_message_type(WRENCH_STAMPED).name == 'wrench'
    assert kinds.for_message_type(STRING) is None
    assert kinds.message_types_by_kind()['image'] == (IMAGE, COMPRESSED_IMAGE)
    with pytest.raises(ConfigError, match=r"unknown modality kind 'video'; known: \('image'"):
        kinds.get('video')


def test_a_kind_or_message_type_registers_once():
    with pytest.raises(ValueError, match='registered twice'):
        kinds.register(kinds.get('audio'))

    class Sonar(kinds.Kind):
        name = 'sonar'
        message_types = (AUDIO_CHUNK,)

    with pytest.raises(ValueError, match="read by kind 'audio'"):
        kinds.register(Sonar())

    class Echo(kinds.Kind):
        name = 'echo'
        frame_types = (AudioFrame,)

    with pytest.raises(ValueError, match="AudioFrame is a record of kind 'audio'"):
        kinds.register(Echo())
    assert 'sonar' not in kinds.names() and 'echo' not in kinds.names()


def test_messages_and_records_dispatch_through_the_registry():
    from llmos_ros.core.bags import MESSAGES
    wrench = WrenchFrame(1_000_000_005, np.arange(6, dtype=np.float32), 'ft_link')
    msg_type, msg = kinds.frame_message(wrench, MESSAGES)  # a rosbags message
    assert msg_type == WRENCH_STAMPED and msg.wrench.torque.z == 5.0
    frame = kinds.frame_from_msg(msg_type, msg)
    assert isinstance(frame, WrenchFrame) and frame.values.tolist() == list(range(6))
    assert frame.end_ns == frame.stamp_ns == 1_000_000_005 and frame.frame_id == 'ft_link'
    with pytest.raises(ValueError, match='not a sensor input type of a modality kind: ' + STRING):
        kinds.frame_from_msg(STRING, msg)
    with pytest.raises(TypeError, match='not a frame record: str'):
        kinds.frame_message('text', MESSAGES)


def test_unknown_kind_error_names_the_modality():
    with pytest.raises(ConfigError, match=r"modalities\.lidar\.kind must be one of .*got 'scan'"):
        ModalityConfig('lidar', 'scan', '/scan', 'sensor_msgs/msg/LaserScan')
    with pytest.raises(ConfigError, match=r'modalities\.cam\.kind must be one of'):
        Config.from_dict({'modalities': {'cam': {'kind': 'video', 'topic': 'x',
                                                 'msg_type': 'y'}}})


def test_default_windows_come_from_the_kind():
    def mod(kind):
        return ModalityConfig(kind, kind, '/t', 'x', rows=2, cols=2)
    assert [mod(k).window_s for k in kinds.names()] == [0.0, 1.5, 0.32, 0.32]
    assert [kinds.get(k).windowed(mod(k)) for k in kinds.names()] == [False, True, True, True]
    assert kinds.get('audio').spans_time and not kinds.get('taxels').spans_time


def test_reference_is_the_first_modality_of_the_lowest_rank():
    def cfg(*pairs):
        return Config.from_dict({'modalities': {n: {'kind': k, 'topic': n, 'msg_type': 'x',
                                                    'rows': 1, 'cols': 1} for n, k in pairs}})
    assert reference_modality(cfg(('ft', 'wrench'), ('mic', 'audio'), ('cam', 'image'))) == 'cam'
    assert reference_modality(cfg(('ft', 'wrench'), ('mic', 'audio'), ('skin', 'taxels'))) \
        == 'skin'
    assert reference_modality(cfg(('ft', 'wrench'), ('mic', 'audio'))) == 'mic'


# Per kind: a modality, a good window ending at t = 100 ms and a frame of another kind.
RGB = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
CASES = {
    'image': (ModalityConfig('cam', 'image', '/c', IMAGE, height=4, width=6, channels=3),
              [ImageFrame(90 * MS, 'rgb8', 4, 6, 18, False, RGB.ravel())]),
    'audio': (ModalityConfig('mic', 'audio', '/m', AUDIO_CHUNK, sample_rate=8000,
                             window_s=0.064, n_mels=8, hop_s=0.008),
              [AudioFrame(36 * MS, 8000, 1,
                            np.sin(np.arange(512, dtype=np.float32) * 0.3))]),
    'taxels': (ModalityConfig('skin', 'taxels', '/s', TACTILE_ARRAY, rows=2, cols=3,
                              channels=2, window_s=0.02),
               [TactileFrame(s * MS, 2, 3, 2, np.arange(12, dtype=np.float32) * s)
                for s in (85, 95)]),
    'wrench': (ModalityConfig('ft', 'wrench', '/w', WRENCH_STAMPED, window_s=0.02),
               [WrenchFrame(s * MS, np.arange(6, dtype=np.float32) * s) for s in (85, 95)]),
}


@pytest.mark.parametrize('name', kinds.names())
def test_each_kind_shape_validate_and_inverse_round_trip(name):
    mod, window = CASES[name]
    kind = kinds.of(mod)
    for frame in window:
        kind.validate(mod, frame)
    other = CASES['wrench' if name != 'wrench' else 'taxels'][1][0]
    with pytest.raises(InputError) as err:
        kind.validate(mod, other)
    assert err.value.reason == 'type'
    raw = kind.preprocess(mod, window, 100 * MS)
    assert raw.shape == mod.shape() == kind.shape(mod) and raw.dtype == np.float32
    prep = Preprocessor(mod, {'mean': [0.5] * raw.shape[0], 'std': [2.0] * raw.shape[0]})
    z = prep(window, 100 * MS)
    np.testing.assert_allclose(z, (raw - 0.5) / 2.0, rtol=1e-6)
    back = prep.inverse(z)  # stats undone, then the kind's inverse
    np.testing.assert_allclose(back, kind.inverse(mod, raw), rtol=1e-5, atol=1e-4)
    pred = prep.prediction_frame(z, 100 * MS, 'p', iterations=1)
    assert kinds.for_message_type(kind.prediction_type) is kind
    assert (pred.stamp_ns, pred.frame_id) == (100 * MS, 'p')
    kind.validate(mod, pred)  # the prediction is an input of its own kind


def test_inverse_gives_the_published_units():
    mod, window = CASES['image']
    np.testing.assert_allclose(Preprocessor(mod).inverse(Preprocessor(mod)(window, 0)),
                               RGB.transpose(2, 0, 1), atol=1e-3)  # [0, 255]
    mod, window = CASES['taxels']
    np.testing.assert_array_equal(  # newest step as (channels, rows, cols)
        Preprocessor(mod).inverse(Preprocessor(mod)(window, 100 * MS)),
        (np.arange(12, dtype=np.float32) * 95).reshape(2, 3, 2).transpose(2, 0, 1))
    mod, window = CASES['wrench']
    np.testing.assert_array_equal(  # newest step, the six axes
        Preprocessor(mod).inverse(Preprocessor(mod)(window, 100 * MS)),
        np.arange(6, dtype=np.float32) * 95)


@pytest.mark.parametrize('name, role', [('image', 'camera'), ('audio', 'audio'),
                                        ('taxels', 'tactile'), ('wrench', 'wrench')])
def test_from_topic_fields_build_the_modality(name, role):
    mod, window = CASES[name]
    kind = kinds.get(name)
    assert kind.role('/robot/' + mod.topic.strip('/')) == role
    fields = kind.from_topic(mod.msg_type, window[-1])
    inferred = ModalityConfig(role, name, mod.topic, mod.msg_type, **fields)
    for key, value in fields.items():
        assert getattr(inferred, key) == getattr(mod, key) == value
    assert kinds.get('image').role('/tactile/image') == 'tactile_image'


def test_image_augment_shifts_each_image_by_whole_pixels_with_edges_repeated():
    from llmos_ros.kinds.image import shift_images
    mod, _ = CASES['image']
    batch = np.random.default_rng(0).normal(size=(40, 3, 16, 20)).astype(np.float32)
    out = kinds.of(mod).augment(mod, batch, np.random.default_rng(1), 0.125)  # 2 px, 2 px
    np.testing.assert_array_equal(out, shift_images(batch, np.random.default_rng(1), 0.125))
    seen, edges = set(), 0
    for src, dst in zip(batch, out):
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                   if np.array_equal(
                       dst[:, max(dy, 0):16 + min(dy, 0), max(dx, 0):20 + min(dx, 0)],
                       src[:, max(-dy, 0):16 + min(-dy, 0), max(-dx, 0):20 + min(-dx, 0)])]
        assert len(matches) == 1  # content moved by exactly one whole-pixel offset
        dy, dx = matches[0]
        seen.add((dy, dx))
        if dy > 0 and dx == 0:  # the uncovered strip repeats the image's first row
            np.testing.assert_array_equal(dst[:, :dy], np.repeat(src[:, :1], dy, axis=1))
            edges += 1
        if dx < 0 and dy == 0:  # ... or its last column
            np.testing.assert_array_equal(dst[:, :, dx:], np.repeat(src[:, :, -1:], -dx, axis=2))
            edges += 1
    assert len(seen) > 10 and edges >= 2  # offsets vary from image to image
    np.testing.assert_array_equal(shift_images(batch, np.random.default_rng(1), 0.0), batch)


@pytest.mark.parametrize('name', ['audio', 'taxels', 'wrench'])
def test_only_images_are_augmented(name):
    """A spectrogram's rows are frequencies and a taxel pad's cells are places: never moved."""
    mod, window = CASES[name]
    batch = np.stack([kinds.of(mod).preprocess(mod, window, 100 * MS)] * 4)
    out = kinds.of(mod).augment(mod, batch, np.random.default_rng(0), 0.25)
    np.testing.assert_array_equal(out, batch)
