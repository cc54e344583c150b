"""core/messages.py: one field mapping, rclpy and rosbags flavours give the same messages."""
import numpy as np
import pytest

from llmos_ros.core.bags import MESSAGES, typestore
from llmos_ros.core.frames import stamp_to_ns
from llmos_ros.core.messages import (
    latent_state_message,
    surprise_message,
    time_message,
)
from llmos_ros.kinds import frame_from_msg, frame_message
from llmos_ros.kinds.audio import AudioFrame
from llmos_ros.kinds.image import CompressedFrame, ImageFrame
from llmos_ros.kinds.taxels import TactileFrame
from llmos_ros.kinds.wrench import WrenchFrame

pytestmark = pytest.mark.ros

STAMP = 1_700_000_123_999_999_999
RNG = np.random.default_rng(5)
FRAMES = [
    ImageFrame(STAMP, 'rgb8', 2, 3, 9, False, RNG.integers(0, 256, 18, dtype=np.uint8), 'cam'),
    CompressedFrame(STAMP + 1, 'png', RNG.integers(0, 256, 21, dtype=np.uint8), 'cam'),
    AudioFrame(STAMP + 2, 44100, 2, RNG.standard_normal(8).astype(np.float32), 'mic'),
    TactileFrame(STAMP + 3, 2, 2, 3, RNG.standard_normal(12).astype(np.float32), 'skin'),
    WrenchFrame(STAMP + 4, RNG.standard_normal(6).astype(np.float32), 'ft_link'),
]
LATENT = {'stamp_ns': STAMP, 'frame_id': 'llmos', 'model_id': 'abc', 'fusion': 'mmvae_plus',
          'mean': RNG.standard_normal(6).astype(np.float32), 'std': np.full(6, 0.5, np.float32),
          'shared_dim': 4, 'private_dim': 1, 'private_modalities': ['camera', 'audio'],
          'modalities': ['camera', 'audio'], 'modality_stamps_ns': [STAMP - 5, STAMP - 10**9],
          'modality_ages': [5e-9, 1.0], 'modality_weights': [1.0, 0.5]}
SURPRISE = {'stamp_ns': STAMP, 'frame_id': 'llmos', 'model_id': 'abc',
            'modalities': ['camera', 'audio'], 'scores': [0.5, 7.0],
            'tail_probabilities': [0.5, 0.005]}


def _equal_frames(a, b):
    assert type(a) is type(b)
    for name, value in vars(a).items():
        other = getattr(b, name)
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(value, other)
        else:
            assert value == other, name


def _same(rclpy_msg, bag_msg, msg_type):
    """The rosbags message, serialized, decodes in rclpy to the rclpy-built message."""
    from rclpy.serialization import deserialize_message
    cdr = bytes(typestore().serialize_cdr(bag_msg, msg_type))
    assert deserialize_message(cdr, type(rclpy_msg)) == rclpy_msg, msg_type


@pytest.mark.parametrize('frame', FRAMES, ids=lambda f: type(f).__name__)
def test_frame_round_trip_in_both_flavours(frame):
    from llmos_ros.nodes.convert import RCLPY
    ros_type, ros_msg = frame_message(frame, RCLPY)
    bag_type, bag_msg = frame_message(frame, MESSAGES)
    assert ros_type == bag_type
    _equal_frames(frame_from_msg(ros_type, ros_msg), frame)
    _equal_frames(frame_from_msg(bag_type, bag_msg), frame)
    _same(ros_msg, bag_msg, bag_type)


def test_outputs_equal_in_both_flavours():
    from llmos_ros.core.messages import LATENT_STATE
    from llmos_ros.core.messages import SURPRISE as SURPRISE_TYPE
    from llmos_ros.nodes import convert
    _same(convert.latent_state(LATENT), latent_state_message(LATENT, MESSAGES), LATENT_STATE)
    _same(convert.surprise(SURPRISE), surprise_message(SURPRISE, MESSAGES), SURPRISE_TYPE)
    msg = convert.latent_state(LATENT)
    assert [stamp_to_ns(t) for t in msg.modality_stamps] == LATENT['modality_stamps_ns']
    np.testing.assert_array_equal(np.asarray(msg.mean, np.float32), LATENT['mean'])


@pytest.mark.parametrize('stamp_ns', [0, 1, 999_999_999, 10**9, STAMP])
def test_stamps_round_trip(stamp_ns):
    from llmos_ros.nodes.convert import RCLPY, time_msg
    for stamp in (time_msg(stamp_ns), time_message(stamp_ns, MESSAGES),
                  time_message(stamp_ns, RCLPY)):
        assert 0 <= stamp.nanosec < 10**9
        assert stamp_to_ns(stamp) == stamp_ns


def test_message_class_names_what_it_cannot_import():
    from llmos_ros.msg import AudioChunk
    from llmos_ros.nodes.convert import message_class
    assert message_class('llmos_ros/msg/AudioChunk') is AudioChunk
    assert message_class('llmos_ros/AudioChunk') is AudioChunk
    with pytest.raises(ValueError, match='no_such_pkg/msg/Thing cannot be imported'):
        message_class('no_such_pkg/msg/Thing')
    with pytest.raises(ValueError, match='not of the form pkg/msg/Type'):
        message_class('Image')
