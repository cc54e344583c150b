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
