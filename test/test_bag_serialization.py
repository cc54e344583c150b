"""rosbags messages of every contract type: bag round trip, and CDR bytes equal to rclpy's."""
import numpy as np
import pytest

from llmos_ros.core.bags import BagWriter, make_header, read_bag, typestore

pytestmark = pytest.mark.ros


def _cases():
    """(msg_type, rosbags message, rclpy message) pairs with the same content."""
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import CompressedImage, Image
    from std_msgs.msg import Header, String

    from llmos_ros.msg import AudioChunk, LatentState, Surprise, TactileArray

    t = typestore().types
    rng = np.random.default_rng(3)
    stamp = 1_700_000_123_456_789_012
    sec, nsec = divmod(stamp, 10**9)

    def header(frame_id):
        return Header(stamp=Time(sec=sec, nanosec=nsec), frame_id=frame_id)

    pixels = rng.integers(0, 256, 2 * 8, dtype=np.uint8)
    jpeg = rng.integers(0, 256, 37, dtype=np.uint8)
    samples = rng.standard_normal(10).astype(np.float32)
    values = rng.standard_normal(12).astype(np.float32)
    mean = rng.standard_normal(5).astype(np.float32)
    std = rng.random(5).astype(np.float32)
    cases = [
        ('sensor_msgs/msg/Image',
         t['sensor_msgs/msg/Image'](header=make_header(stamp, 'camera'), height=2, width=2,
                                    encoding='mono16', is_bigendian=1, step=8, data=pixels),
         Image(header=header('camera'), height=2, width=2, encoding='mono16', is_bigendian=1,
               step=8, data=pixels.tobytes())),
        ('sensor_msgs/msg/CompressedImage',
         t['sensor_msgs/msg/CompressedImage'](header=make_header(stamp, 'c'),
                                              format='rgb8; jpeg compressed bgr8', data=jpeg),
         CompressedImage(header=header('c'), format='rgb8; jpeg compressed bgr8',
                         data=jpeg.tobytes())),
        ('llmos_ros/msg/AudioChunk',
         t['llmos_ros/msg/AudioChunk'](header=make_header(stamp, 'mic'), sample_rate=44100,
                                       channels=2, samples=samples),
         AudioChunk(header=header('mic'), sample_rate=44100, channels=2,
                    samples=samples.tolist())),
        ('llmos_ros/msg/TactileArray',
         t['llmos_ros/msg/TactileArray'](header=make_header(stamp, 'skin'), rows=2, cols=2,
                                         channels=3, values=values),
         TactileArray(header=header('skin'), rows=2, cols=2, channels=3,
                      values=values.tolist())),
        ('std_msgs/msg/String', t['std_msgs/msg/String'](data='bottle full'),
         String(data='bottle full')),
        ('llmos_ros/msg/LatentState',
         t['llmos_ros/msg/LatentState'](
             header=make_header(stamp, 'llmos'), model_id='abc', fusion='mmvae_plus',
             mean=mean, std=std, shared_dim=3, private_dim=1,
             private_modalities=['camera', 'audio'], modalities=['camera', 'audio'],
             modality_stamps=[t['builtin_interfaces/msg/Time'](sec=sec, nanosec=nsec),
                              t['builtin_interfaces/msg/Time'](sec=sec - 1, nanosec=5)],
             modality_ages=np.array([0.0, 1.5], np.float32),
             modality_weights=np.array([1.0, 0.25], np.float32)),
         LatentState(header=header('llmos'), model_id='abc', fusion='mmvae_plus',
                     mean=mean.tolist(), std=std.tolist(), shared_dim=3, private_dim=1,
                     private_modalities=['camera', 'audio'], modalities=['camera', 'audio'],
                     modality_stamps=[Time(sec=sec, nanosec=nsec), Time(sec=sec - 1, nanosec=5)],
                     modality_ages=[0.0, 1.5], modality_weights=[1.0, 0.25])),
        ('llmos_ros/msg/Surprise',
         t['llmos_ros/msg/Surprise'](
             header=make_header(stamp, 'llmos'), model_id='abc', modalities=['camera', 'audio'],
             scores=np.array([0.5, 7.0], np.float32),
             tail_probabilities=np.array([0.5, 0.005], np.float32)),
         Surprise(header=header('llmos'), model_id='abc', modalities=['camera', 'audio'],
                  scores=[0.5, 7.0], tail_probabilities=[0.5, 0.005])),
    ]
    return cases


def _equal(a, b):
    if hasattr(a, '__dataclass_fields__'):
        assert type(a).__name__ == type(b).__name__
        for f in a.__dataclass_fields__:
            _equal(getattr(a, f), getattr(b, f))
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _equal(x, y)
    else:
        assert a == b


def test_cdr_bytes_equal_rclpy():
    """
    Same bytes, except alignment padding: rclpy leaves padding bytes uninitialised.

    Every byte that differs must be a zero padding byte of rosbags' output, and each side
    decodes the other's bytes to the same message.
    """
    from rclpy.serialization import deserialize_message, serialize_message
    store = typestore()
    for msg_type, ours, theirs in _cases():
        cdr = bytes(store.serialize_cdr(ours, msg_type))
        ref = bytes(serialize_message(theirs))
        assert len(cdr) == len(ref), msg_type
        diff = [i for i, (a, b) in enumerate(zip(cdr, ref)) if a != b]
        assert all(cdr[i] == 0 for i in diff), msg_type
        assert len(diff) <= 3 * 8, msg_type  # a few padding bytes at most
        assert deserialize_message(cdr, type(theirs)) == theirs, msg_type
        _equal(ours, store.deserialize_cdr(ref, msg_type))


def test_cdr_bytes_identical_without_padding():
    """With string lengths that need no padding, the bytes are identical."""
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import CompressedImage
    from std_msgs.msg import Header
    store = typestore()
    ours = store.types['sensor_msgs/msg/CompressedImage'](
        header=make_header(5, 'cam'), format='png', data=np.arange(9, dtype=np.uint8))
    theirs = CompressedImage(header=Header(frame_id='cam'), format='png',
                             data=bytes(range(9)))
    theirs.header.stamp.nanosec = 5
    assert bytes(store.serialize_cdr(ours, 'sensor_msgs/msg/CompressedImage')) == \
        bytes(serialize_message(theirs))


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_bag_round_trip_every_type(tmp_path, storage):
    cases = _cases()
    path = tmp_path / 'bag'
    with BagWriter(path, storage=storage) as w:
        for i, (msg_type, ours, _) in enumerate(cases):
            w.write(f'topic_{i}', msg_type, 1000 + i, ours)
    got = list(read_bag(path))
    assert len(got) == len(cases)
    for (msg_type, ours, _), (_topic, rtype, _, back) in zip(cases, got):
        assert rtype == msg_type
        _equal(ours, back)
