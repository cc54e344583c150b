"""rosbag2 I/O with rosbags: round trips, topic names, stamps, errors on bad bags."""
import re

import numpy as np
import pytest

from llmos_ros.core.bags import (
    BagWriter,
    bag_info,
    bag_topics,
    frame_to_msg,
    make_header,
    read_bag,
    typestore,
)
from llmos_ros.errors import BagError
from llmos_ros.kinds import frame_from_msg
from llmos_ros.kinds.audio import AudioFrame
from llmos_ros.kinds.image import CompressedFrame, ImageFrame
from llmos_ros.kinds.taxels import TactileFrame

MS = 1_000_000


def frames():
    rng = np.random.default_rng(1)
    return [
        ('camera/image_raw', ImageFrame(10 * MS, 'rgb8', 2, 3, 9, False,
                                        rng.integers(0, 256, 18, dtype=np.uint8), 'camera')),
        ('/camera/image_raw/compressed', CompressedFrame(11 * MS, 'jpeg',
                                                         np.arange(20, dtype=np.uint8), 'c')),
        ('microphone/audio', AudioFrame(12 * MS, 16000, 2,
                                        rng.standard_normal(64).astype(np.float32), 'mic')),
        ('tactile/array', TactileFrame(13 * MS, 2, 3, 3,
                                       rng.standard_normal(18).astype(np.float32), 'skin')),
    ]


def same(a, b):
    assert type(a) is type(b)
    for f in a.__dataclass_fields__:
        va, vb = getattr(a, f), getattr(b, f)
        if isinstance(va, np.ndarray):
            np.testing.assert_array_equal(va, vb)
        else:
            assert va == vb, f


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_round_trip(tmp_path, storage):
    path = tmp_path / 'bag'
    with BagWriter(path, storage=storage) as w:
        for topic, fr in frames():
            w.write_frame(topic, fr)
        w.write_label('episode/label', 5 * MS, 'cup')
    assert bag_topics(path) == {
        '/camera/image_raw': 'sensor_msgs/msg/Image',
        '/camera/image_raw/compressed': 'sensor_msgs/msg/CompressedImage',
        '/microphone/audio': 'llmos_ros/msg/AudioChunk',
        '/tactile/array': 'llmos_ros/msg/TactileArray',
        '/episode/label': 'std_msgs/msg/String'}
    got = list(read_bag(path))
    assert [g[0] for g in got][0] == '/episode/label'  # log-time order
    assert got[0][2] == 5 * MS and got[0][3].data == 'cup'
    for (topic, fr), (rtopic, mtype, stamp, msg) in zip(frames(), got[1:]):
        assert rtopic == '/' + topic.lstrip('/') and stamp == fr.stamp_ns
        same(frame_from_msg(mtype, msg), fr)
    # topic filter, relative or absolute
    assert [g[0] for g in read_bag(path, ['tactile/array', '/episode/label'])] == \
        ['/episode/label', '/tactile/array']
    assert list(read_bag(path, ['nope'])) == []
    assert bag_info(path)['message_count'] == 5


def test_header_stamp_not_log_time(tmp_path):
    path = tmp_path / 'bag'
    mtype, msg = frame_to_msg(frames()[0][1])
    with BagWriter(path) as w:
        w.write('/camera/image_raw', mtype, 999 * MS, msg)  # log time != header stamp
    ((_, _, stamp, _),) = read_bag(path)
    assert stamp == 10 * MS


def test_latent_state_registered(tmp_path):
    store = typestore()
    t = store.types
    msg = t['llmos_ros/msg/LatentState'](
        header=make_header(7, 'llmos'), model_id='m', fusion='poe',
        mean=np.ones(3, np.float32), std=np.ones(3, np.float32), shared_dim=3, private_dim=0,
        private_modalities=[], modalities=['camera'],
        modality_stamps=[t['builtin_interfaces/msg/Time'](sec=0, nanosec=7)],
        modality_ages=np.zeros(1, np.float32), modality_weights=np.ones(1, np.float32))
    path = tmp_path / 'bag'
    with BagWriter(path, storage='sqlite3') as w:
        w.write('llmos/latent', 'llmos_ros/msg/LatentState', 7, msg)
    ((topic, _, stamp, back),) = read_bag(path)
    assert topic == '/llmos/latent' and stamp == 7 and back.modalities == ['camera']


def test_errors(tmp_path):
    with pytest.raises(BagError, match='not found'):
        bag_topics(tmp_path / 'missing')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(BagError, match='not a rosbag2'):
        bag_topics(tmp_path / 'empty')
    (tmp_path / 'x.txt').write_text('hello')
    with pytest.raises(BagError, match='not a bag'):
        list(read_bag(tmp_path / 'x.txt'))
    (tmp_path / 'junk.mcap').write_bytes(b'\x89MCAP0\r\n' + b'\0' * 100)
    with pytest.raises(BagError, match='corrupt'):
        list(read_bag(tmp_path / 'junk.mcap'))
    with pytest.raises(BagError, match='unknown message type'):
        with BagWriter(tmp_path / 'b') as w:
            w.write('/x', 'foo_msgs/msg/Bar', 0, None)
    with pytest.raises(BagError, match='exists'):
        BagWriter(tmp_path / 'b')


@pytest.mark.parametrize('storage,suffix,compress', [
    ('mcap', '.mcap', False), ('mcap', '.mcap', True), ('sqlite3', '.db3', False)])
def test_truncated_bag(tmp_path, storage, suffix, compress):
    path = tmp_path / 'bag'
    with BagWriter(path, storage=storage, compress=compress) as w:
        for i in range(1000):  # several MCAP chunks
            w.write_frame('microphone/audio',
                          AudioFrame(i * 100 * MS, 8000, 1, np.zeros(800, np.float32)))
    (data_file,) = path.glob('*' + suffix)
    data = data_file.read_bytes()
    data_file.write_bytes(data[:len(data) // 2])
    n = 0
    with pytest.raises(BagError, match=r'truncated.*\b(\d+) messages') as info:
        for _ in read_bag(path):
            n += 1
    assert str(path) in str(info.value)
    assert re.search(r'\b(\d+) messages', str(info.value)).group(1) == str(n)
    if storage == 'mcap':  # the complete chunks before the cut are still read
        assert 100 < n < 1000
    with pytest.raises(BagError, match='truncated'):
        bag_topics(path)


def _definition_lines(text: str) -> list[str]:
    """A .msg text without comments and blanks; Time spelled 'time', as rosbags writes it."""
    lines = (' '.join(line.partition('#')[0].split()) for line in text.splitlines())
    return [line.replace('builtin_interfaces/Time', 'time') for line in lines if line]


def test_typestore_definitions_are_the_msg_files():
    """The definitions read and written into bags are msg/*.msg, field by field and as text."""
    from helpers import ROOT
    from rosbags.typesys import get_types_from_msg

    from llmos_ros.core.bags import CUSTOM_TYPES, msg_dir
    folder = ROOT / 'msg'
    assert msg_dir() == folder
    assert sorted(CUSTOM_TYPES) == sorted(p.stem for p in folder.glob('*.msg'))
    store = typestore()
    for name in CUSTOM_TYPES:
        text = (folder / f'{name}.msg').read_text()
        msg_type = f'llmos_ros/msg/{name}'
        assert store.fielddefs[msg_type] == get_types_from_msg(text, msg_type)[msg_type], name
        written = store.generate_msgdef(msg_type)[0].split('=' * 80)[0]
        assert _definition_lines(written) == _definition_lines(text), name
