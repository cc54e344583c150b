"""The YAML configs document the code's defaults, and bad configs give clear errors."""
from helpers import ROOT
import pytest
import yaml

from llmos_ros.config import Config, load_config
from llmos_ros.errors import ConfigError


def test_model_yaml_is_the_default_config():
    assert load_config(ROOT / 'config' / 'model.yaml').to_dict() == Config().to_dict()


@pytest.mark.parametrize('text, message', [
    ('model: {fusion: concat}', 'model.fusion must be one of'),
    ('train: {stpes: 3}', "unknown keys ['stpes']"),
    ('training: {}', 'unknown config sections'),
    ('modalities: {cam: {kind: video, topic: x, msg_type: y}}', 'kind must be one of'),
    ('model: [1, 2', 'not valid YAML'),
])
def test_bad_config_errors(tmp_path, text, message):
    path = tmp_path / 'bad.yaml'
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace('[', r'\[').replace(']', r'\]')):
        load_config(path)


def test_node_param_files_use_wildcard_node_names():
    """Params files apply whatever the node is named (launch, runner, remapping)."""
    for name in ('perception', 'sim_source', 'camera', 'microphone'):
        data = yaml.safe_load((ROOT / 'config' / f'{name}.yaml').read_text())
        assert list(data) == ['/**'] and 'ros__parameters' in data['/**'], name


def test_modality_overrides_tune_inferred_modalities(tmp_path):
    from llmos_ros.config import ModalityConfig, apply_overrides, load_training_config
    path = tmp_path / 'tune.yaml'
    path.write_text('modalities: {audio: {window_s: 1.5, n_mels: 40}}\nmodel: {beta: 0.5}\n')
    cfg, overrides = load_training_config(path)
    assert cfg.modalities == {} and cfg.model.beta == 0.5
    inferred = {'audio': ModalityConfig('audio', 'audio', 'microphone/audio',
                                        'llmos_ros/msg/AudioChunk', sample_rate=8000)}
    apply_overrides(inferred, overrides)
    assert (inferred['audio'].window_s, inferred['audio'].n_mels) == (1.5, 40)
    assert inferred['audio'].shape() == (1, 40, 46)
    with pytest.raises(ConfigError, match='no such modality'):
        apply_overrides(inferred, {'camera': {'height': 16}})
    with pytest.raises(ConfigError, match='unknown keys'):
        apply_overrides(inferred, {'audio': {'windows': 2}})


@pytest.mark.parametrize('value', [-0.1, 0.5])
def test_augment_shift_outside_its_range_is_an_error(tmp_path, value):
    path = tmp_path / 'bad.yaml'
    path.write_text(f'train: {{augment_shift: {value}}}')
    with pytest.raises(ConfigError, match=r'train.augment_shift must be in \[0, 0.5\)'):
        load_config(path)


@pytest.mark.parametrize('train, match', [
    ('{lr_schedule: linear}', r"train.lr_schedule must be one of \['cosine', 'constant'\]"),
    ('{lr_final: 1.5}', r'train.lr_final must be in \[0, 1\]'),
    ('{lr_final: -0.1}', r'train.lr_final must be in \[0, 1\]')])
def test_learning_rate_schedule_settings_are_checked(tmp_path, train, match):
    path = tmp_path / 'bad.yaml'
    path.write_text(f'train: {train}')
    with pytest.raises(ConfigError, match=match):
        load_config(path)


def test_likelihood_defaults_to_the_kinds_and_refuses_what_the_kind_lacks(tmp_path):
    path = tmp_path / 'cfg.yaml'
    path.write_text('modalities:\n'
                    '  cam: {kind: image, topic: c, msg_type: sensor_msgs/msg/Image}\n'
                    '  mic: {kind: audio, topic: m, msg_type: llmos_ros/msg/AudioChunk}\n')
    cfg = load_config(path)
    assert cfg.modalities['cam'].likelihood == 'space_shift'
    assert cfg.modalities['mic'].likelihood == 'time_shift'
    path.write_text('modalities:\n  cam: {kind: image, topic: c, msg_type: sensor_msgs/msg/Image,'
                    ' likelihood: time_shift}\n')
    with pytest.raises(ConfigError, match=r"modalities.cam.likelihood: 'time_shift' is not one "
                                          r"of kind 'image': \['space_shift', 'gaussian'\]"):
        load_config(path)
    from llmos_ros.config import ModalityConfig, apply_overrides
    mods = {'cam': ModalityConfig('cam', 'image', 'c', 'sensor_msgs/msg/Image'),
            'mic': ModalityConfig('mic', 'audio', 'm', 'llmos_ros/msg/AudioChunk')}
    apply_overrides(mods, {'mic': {'likelihood': 'gaussian'}})
    assert mods['mic'].likelihood == 'gaussian'
    with pytest.raises(ConfigError, match='modalities.cam.likelihood'):
        apply_overrides(mods, {'cam': {'likelihood': 'laplace'}})
    with pytest.raises(ConfigError, match=r'modalities.cam.max_shift must be in \(0, 0.5\]'):
        apply_overrides(mods, {'cam': {'max_shift': 0.0}})
