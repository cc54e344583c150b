"""core/bag_samples: one bag -> sample sets and typed drops, on real rosbag2 files."""
import numpy as np
import pytest

from llmos_ros.config import Config, ModalityConfig
from llmos_ros.core.bag_samples import BagSamples, check_topics, labels_at
from llmos_ros.core.bags import BagWriter
from llmos_ros.core.frames import STRING
from llmos_ros.core.pairing import Pairer
from llmos_ros.core.preprocess import Preprocessor
from llmos_ros.core.sync import Synchronizer
from llmos_ros.errors import BagError
from llmos_ros.kinds.image import IMAGE, ImageFrame
from llmos_ros.kinds.taxels import TactileFrame

MS = 1_000_000
T0 = 1_700_000_000 * 1_000_000_000


def cfg() -> Config:
    return Config(modalities={
        'camera': ModalityConfig('camera', 'image', '/camera/image_raw', IMAGE, height=4, width=4,
                                 channels=1),
        'tactile': ModalityConfig('tactile', 'taxels', '/tactile/array',
                                  'llmos_ros/msg/TactileArray', rows=2, cols=2, channels=1,
                                  window_s=0.0)})


def image(t_ms: int, encoding: str = 'mono8') -> ImageFrame:
    return ImageFrame(T0 + t_ms * MS, encoding, 4, 4, 4, False, np.zeros(16, np.uint8), 'cam')


def pairer(c: Config) -> Pairer:
    return Pairer({n: Preprocessor(m) for n, m in c.modalities.items()}, Synchronizer(c))


@pytest.fixture(scope='module')
def bag(tmp_path_factory):
    """1 s: camera 10 Hz (one yuv422 frame), taxels 20 Hz, namespaced labels, a chatter."""
    path = tmp_path_factory.mktemp('bs') / 'bag'
    with BagWriter(path) as w:
        w.write_label('/robot/episode/label', T0 + 250 * MS, 'cube')
        w.write_label('/robot/episode/label', T0 + 650 * MS, 'ball')
        w.write_label('/chatter', T0, 'not a label')
        for t in range(0, 1000, 50):
            if t % 100 == 0:
                w.write_frame('camera/image_raw',
                              image(t, 'yuv422' if t == 300 else 'mono8'))
            w.write_frame('/tactile/array',
                          TactileFrame(T0 + t * MS, 2, 2, 1, np.full(4, t, np.float32)))
    return path


def test_steps_samples_drops_and_labels(bag):
    c = cfg()
    source = BagSamples(bag, c, pairer(c), all_topics=True)
    assert source.topics == {'/camera/image_raw': 'camera', '/tactile/array': 'tactile'}
    assert source.label_topic == '/robot/episode/label'
    steps = list(source)
    assert len(steps) == 10 + 20 + 3 + 1  # every message, then the end of the bag
    assert steps[-1].topic is None
    assert sum(s.is_label for s in steps) == 2
    unused = [s for s in steps if s.topic == '/chatter']
    assert len(unused) == 1 and unused[0].modality is None and not unused[0].is_label
    refused = [s.result.refused for s in steps if s.result.refused]
    assert [(d.modality, d.reason) for d in refused] == [('camera', 'encoding')]
    assert 'yuv422' in refused[0].detail
    samples = [x for s in steps for x in s.result.samples]
    stamps = np.array([x.stamp_ns for x in samples])
    assert ((stamps - T0) // MS).tolist() == [0, 100, 200, 400, 500, 600, 700, 800, 900]
    assert source.labels(stamps).tolist() == ['', '', '', 'cube', 'cube', 'cube', 'ball',
                                              'ball', 'ball']


def test_only_model_and_label_topics_without_all_topics(bag):
    c = cfg()
    steps = list(BagSamples(bag, c, pairer(c)))
    assert {s.topic for s in steps} == {'/camera/image_raw', '/tactile/array',
                                        '/robot/episode/label', None}


def test_type_mismatch_names_bag_topic_and_types(tmp_path):
    path = tmp_path / 'wrong'
    with BagWriter(path) as w:
        w.write_label('/camera/image_raw', T0, 'a string where the camera should be')
        w.write_frame('/tactile/array', TactileFrame(T0, 2, 2, 1, np.zeros(4, np.float32)))
    c = cfg()
    for make in (lambda: check_topics(path, c), lambda: BagSamples(path, c, pairer(c))):
        with pytest.raises(BagError) as err:
            make()
        text = str(err.value)
        assert str(path) in text and 'topic /camera/image_raw holds ' + STRING in text
        assert "'camera' (image)" in text and IMAGE in text


def test_a_bag_without_model_topics_names_both_lists(tmp_path):
    path = tmp_path / 'chatter'
    with BagWriter(path) as w:
        w.write_label('/chatter', T0, 'hi')
    with pytest.raises(BagError, match=r"holds none of the model's topics") as err:
        BagSamples(path, cfg(), pairer(cfg()))
    assert str(path) in str(err.value) and '/chatter (std_msgs/msg/String)' in str(err.value)
    assert '/camera/image_raw' in str(err.value)


def test_a_label_topic_of_another_type_is_not_read_as_labels(tmp_path):
    path = tmp_path / 'labels_as_images'
    with BagWriter(path) as w:
        w.write_frame('/episode/label', image(0))
        w.write_frame('/camera/image_raw', image(0))
    c = cfg()
    source = BagSamples(path, c, pairer(c), all_topics=True)
    assert source.label_topic is None
    steps = list(source)
    assert not any(s.is_label for s in steps) and source.label_t == []


def test_labels_at_takes_the_latest_label_at_or_before_each_stamp():
    got = labels_at([5, 10, 15, 30, 31], [30, 10], ['b', 'a'])  # labels in any order
    assert got.tolist() == ['', 'a', 'a', 'b', 'b']
    assert labels_at([1, 2], [], []).tolist() == ['', '']
