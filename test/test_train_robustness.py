"""llmos-train on hostile inputs: outputs checked first, degenerate data refused, drops shown."""
import json
from pathlib import Path
import re

import numpy as np
import pytest
import yaml

from llmos_ros.core.bags import BagWriter
from llmos_ros.kinds.audio import AudioFrame
from llmos_ros.kinds.image import ImageFrame
from llmos_ros.kinds.taxels import TactileFrame
from llmos_ros.train import main as train_main

SMALL = {'model': {'hidden': 16, 'latent_dim': 4, 'private_dim': 2, 'warmup_steps': 2},
         'train': {'batch_size': 8, 'checkpoint_every': 100, 'val_every': 100, 'steps': 2}}
MS = 1_000_000


pytestmark = pytest.mark.usefixtures('restore_torch_globals')  # train() sets torch globals


def write(path: Path, camera_stamp=lambda t: t, bad_every=0, audio_topic='/microphone/audio',
          audio_as_image=False, seconds=2.0):
    """A bag: camera 8x8 mono8 at 20 Hz, taxels 2x2 at 20 Hz, audio 50 ms chunks at 8 kHz."""
    with BagWriter(path) as bag:
        for k in range(int(seconds * 20)):
            t = k * 50 * MS
            pixels = np.full(64, k % 255, np.uint8)
            size = 63 if bad_every and k % bad_every == 1 else 64  # a wrong-size image
            bag.write_frame('/camera/image_raw',
                            ImageFrame(camera_stamp(t), 'mono8', 8, 8, 8, False, pixels[:size]))
            bag.write_frame('/tactile/array',
                            TactileFrame(t, 2, 2, 1, np.full(4, k, np.float32)))
            if audio_as_image:
                bag.write_frame(audio_topic, ImageFrame(t, 'mono8', 8, 8, 8, False, pixels))
            else:
                bag.write_frame(audio_topic, AudioFrame(t, 8000, 1, np.zeros(400, np.float32)))
    return path


def run(capsys, *args):
    code = train_main([*map(str, args), '--quiet', '--threads', '1'])
    out, err = capsys.readouterr()
    assert 'Traceback' not in err
    return code, out, err


@pytest.fixture
def config(tmp_path):
    path = tmp_path / 'small.yaml'
    path.write_text(yaml.safe_dump(SMALL))
    return path


def test_drops_are_reported_by_reason(tmp_path, config, capsys):
    bag = write(tmp_path / 'bag', bad_every=4)
    code, out, err = run(capsys, '--bag', bag, '--out', tmp_path / 'm.pt', '--config', config)
    assert code == 0, err
    summary = json.loads(out.splitlines()[-1])
    assert summary['drops'] == {'camera/size': 10}
    assert 'inputs dropped, by reason: camera/size: 10' in out


def test_all_zero_camera_stamps_are_refused(tmp_path, config, capsys):
    bag = write(tmp_path / 'bag', camera_stamp=lambda t: 0)
    code, _, err = run(capsys, '--bag', bag, '--out', tmp_path / 'm.pt', '--config', config)
    assert code == 2
    assert 'only 1 sample(s) could be formed' in err and 'camera/stamp_repeated: 39' in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / 'm.pt').exists()


def test_a_contract_topic_of_another_type_is_not_re_purposed(tmp_path, config, capsys):
    bag = write(tmp_path / 'bag', audio_as_image=True)
    code, _, err = run(capsys, '--bag', bag, '--out', tmp_path / 'm.pt')
    assert code == 2
    assert ('topic /microphone/audio holds sensor_msgs/msg/Image, but the input contract says '
            'llmos_ros/msg/AudioChunk') in err


@pytest.mark.parametrize('option, target, match', [
    ('--out', 'file_in_the_way/model.pt', r'--out folder .*file_in_the_way is a file'),
    ('--out', 'a_folder', r'--out .*a_folder is a folder, not a file'),
    ('--out', '/proc/llmos_test/model.pt', r'--out folder /proc/llmos_test cannot be written'),
    ('--log-dir', 'file_in_the_way', r'--log-dir .*file_in_the_way is a file, not a folder'),
    ('--export', '/proc/model.onnx', r'--export folder /proc cannot be written'),
])
def test_unwritable_outputs_fail_before_reading(tmp_path, capsys, option, target, match):
    (tmp_path / 'file_in_the_way').write_text('x')
    (tmp_path / 'a_folder').mkdir()
    target = target if target.startswith('/') else tmp_path / target
    args = ['--bag', tmp_path / 'no_such_bag', '--out', tmp_path / 'm.pt']  # never read
    if option == '--out':
        args[3] = target
    else:
        args += [option, target]
    code, _, err = run(capsys, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('llmos-train: error: ')
    assert re.search(match, lines[0]), lines[0]
