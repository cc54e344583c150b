"""package.xml, setup.py and CMakeLists.txt agree; the colcon and pip installs hold it all."""
import ast
import os
from pathlib import Path
import re
import subprocess
import sys
import sysconfig
import xml.etree.ElementTree as ET

from helpers import ROOT
import pytest

INSTALL = ROOT / 'install' / 'llmos_ros'


def _setup_py_constant(name):
    tree = ast.parse((ROOT / 'setup.py').read_text())
    for node in tree.body:
        targets = [getattr(t, 'id', '') for t in getattr(node, 'targets', [])]
        if isinstance(node, ast.Assign) and name in targets:
            return ast.literal_eval(node.value)
    raise AssertionError(f'setup.py has no {name}')


def _cmake():
    return (ROOT / 'CMakeLists.txt').read_text()


def _cmake_programs():
    block = re.search(r'install\(PROGRAMS(.*?)DESTINATION lib/\$\{PROJECT_NAME\}', _cmake(), re.S)
    return [Path(p).name for p in block.group(1).split()]


def _package_xml_deps():
    root = ET.parse(ROOT / 'package.xml').getroot()
    return {el.text.strip() for el in root if el.tag.endswith('depend')}


def test_executables_agree():
    entry_points = _setup_py_constant('ENTRY_POINTS')
    programs = _cmake_programs()
    scripts = sorted(p.name for p in (ROOT / 'bin').iterdir())
    assert sorted(entry_points) == sorted(programs) == scripts
    for name, module in entry_points.items():
        text = (ROOT / 'bin' / name).read_text()
        assert f'from {module} import main' in text, name
        assert os.access(ROOT / 'bin' / name, os.X_OK), name


def test_data_files_agree():
    data_dirs = set(_setup_py_constant('DATA_DIRS'))
    cmake = _cmake()
    installed = set(re.findall(r'install\(DIRECTORY \$\{_src\}/(\w+)/ DESTINATION share', cmake))
    assert installed | {'msg'} == data_dirs
    generated = re.search(r'rosidl_generate_interfaces\(\$\{PROJECT_NAME\}(.*?)DEPENDENCIES',
                          cmake, re.S).group(1).split()
    assert sorted(g.strip('"') for g in generated) == sorted(
        f'msg/{p.name}' for p in (ROOT / 'msg').glob('*.msg'))


def test_input_messages_match_the_contract():
    spec = ROOT.parent / 'shared' / 'spec'
    if not spec.is_dir():
        pytest.skip('../shared/spec is not beside this checkout')
    for name in ('AudioChunk.msg', 'TactileArray.msg'):
        assert (ROOT / 'msg' / name).read_bytes() == (spec / name).read_bytes(), name


REF = ROOT.parent / 'shared' / 'ref'
DISTROS = ('humble', 'jazzy', 'kilted')


def _ref_lines(name):
    return {line.strip() for line in (REF / name).read_text().splitlines() if line.strip()}


def test_package_xml_deps_resolve_with_rosdep():
    """Every dependency is a rosdep key or a ROS package released in Humble, Jazzy and Kilted."""
    if not REF.is_dir():
        pytest.skip('../shared/ref (rosdistro keys and package lists) is not beside this checkout')
    keys = _ref_lines('rosdep-keys-base.txt') | _ref_lines('rosdep-keys-python.txt')
    released = [_ref_lines(f'ros-packages-{d}.txt') for d in DISTROS]
    unresolved = sorted(dep for dep in _package_xml_deps()
                        if dep not in keys and not all(dep in pkgs for pkgs in released))
    assert not unresolved, f'package.xml: not a rosdep key nor released in {DISTROS}: ' \
        f'{unresolved}'


def test_license_file_matches_package_xml():
    root = ET.parse(ROOT / 'package.xml').getroot()
    assert root.findtext('license') == 'Apache-2.0'
    assert 'Apache License' in (ROOT / 'LICENSE').read_text()[:200]


@pytest.mark.ros
def test_env_sh_puts_the_tools_on_path():
    """After `source scripts/env.sh` the README's commands run by name."""
    if not INSTALL.is_dir():
        pytest.skip('no colcon install: run scripts/setup.sh')
    script = ('source scripts/env.sh >/dev/null && for t in llmos-train llmos-eval llmos-replay '
              'llmos-demo; do command -v "$t" || exit 3; done && llmos-train --help')
    out = subprocess.run(['bash', '-c', script], cwd=ROOT, env=_clean_env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert '--bag' in out.stdout
    assert str(INSTALL / 'lib' / 'llmos_ros' / 'llmos-train') in out.stdout


def test_package_xml_declares_every_ros_import():
    deps = _package_xml_deps()
    imported = set()
    for path in (ROOT / 'llmos_ros').rglob('*.py'):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split('.')[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split('.')[0])
    ros = {'rclpy', 'launch', 'launch_ros', 'builtin_interfaces', 'std_msgs', 'sensor_msgs',
           'diagnostic_msgs', 'lifecycle_msgs', 'rosgraph_msgs', 'rcl_interfaces'}
    python = {'numpy': 'python3-numpy', 'yaml': 'python3-yaml', 'cv2': 'python3-opencv',
              'torch': 'python3-pytorch-pip', 'rosbags': 'python3-rosbags-pip',
              'sounddevice': 'python3-sounddevice-pip', 'matplotlib': 'python3-matplotlib',
              'sklearn': 'python3-sklearn', 'tqdm': 'python3-tqdm',
              'threadpoolctl': 'python3-sklearn'}  # no key of its own; sklearn depends on it
    missing = sorted(m for m in imported & ros if m not in deps)
    missing += sorted(python[m] for m in imported & set(python) if python[m] not in deps)
    assert not missing, f'package.xml lacks: {missing}'


def test_core_does_not_import_ros():
    code = ('import sys, importlib, pkgutil, llmos_ros\n'
            'ros = ("llmos_ros.nodes", "llmos_ros.msg", "llmos_ros.llmos_ros_s")\n'
            'for m in pkgutil.walk_packages(llmos_ros.__path__, "llmos_ros."):\n'
            '    if not m.name.startswith(ros):\n'
            '        importlib.import_module(m.name)\n'
            'bad = [m for m in sys.modules if m.startswith("rclpy") or m == "llmos_ros.msg"]\n'
            'assert not bad, bad\n')
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, '-c', code], check=True, env=env, cwd=ROOT)


@pytest.mark.ros
def test_colcon_install_layout():
    if not INSTALL.is_dir():
        pytest.skip('no colcon install: run scripts/setup.sh')
    for name in _setup_py_constant('ENTRY_POINTS'):
        assert os.access(INSTALL / 'lib' / 'llmos_ros' / name, os.X_OK), name
    share = INSTALL / 'share' / 'llmos_ros'
    for folder in ('launch', 'config', 'msg'):  # msg: installed by rosidl, read by core/bags
        for path in (ROOT / folder).iterdir():
            if path.is_file() and not path.name.startswith('.'):
                assert (share / folder / path.name).is_file(), path
    site = next((INSTALL / 'lib').glob('python3*/site-packages/llmos_ros'))
    assert (site / 'msg' / '_latent_state.py').is_file()
    assert (site / 'config.py').exists()


@pytest.mark.slow
def test_pip_install_without_ros(tmp_path):
    """
    `pip install .` in a new venv gives the CLI tools, and the core imports without rclpy.

    The new venv sees the test venv's packages (a .pth file), which scripts/setup.sh installed
    from the same requirement files: pip checks every install_requires pin against them instead
    of copying torch again (a minute of the suite); a pin they do not satisfy still fails here.
    """
    venv = tmp_path / 'venv'
    subprocess.run(['python3', '-m', 'venv', str(venv)], check=True, env=_clean_env())
    py = venv / 'bin' / 'python'
    where = 'import sysconfig; print(sysconfig.get_paths()["purelib"])'
    site = subprocess.run([str(py), '-c', where], check=True, env=_clean_env(),
                          capture_output=True, text=True).stdout
    Path(site.strip(), 'test_venv.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
    subprocess.run([str(py), '-m', 'pip', 'install', '-q', '--disable-pip-version-check',
                    str(ROOT)], check=True, env=_clean_env(), cwd=tmp_path)
    for tool in ('llmos-train', 'llmos-eval'):
        assert (venv / 'bin' / tool).exists(), tool
    code = ('import sys, llmos_ros.train, llmos_ros.config\n'
            'from llmos_ros.core.bags import msg_dir, typestore\n'
            'typestore()\n'
            'assert "rclpy" not in sys.modules\n'
            'print(llmos_ros.__file__)\n'
            'print(msg_dir())')
    out = subprocess.run([str(py), '-c', code], check=True, env=_clean_env(), cwd=tmp_path,
                         capture_output=True, text=True).stdout
    package, messages = out.split()
    assert str(venv) in package
    assert str(venv) in messages  # the .msg files came with the package (setup.py data_files)
    help_text = subprocess.run([str(venv / 'bin' / 'llmos-train'), '--help'], check=True,
                               env=_clean_env(), capture_output=True, text=True).stdout
    assert '--bag' in help_text


def _clean_env():
    """Environment without the ROS workspace or the project venv on any path."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(('AMENT', 'COLCON', 'CMAKE', 'PYTHON', 'VIRTUAL_ENV', 'LD_LIB',
                                '_ROS', 'ROS'))}
    env['PATH'] = os.pathsep.join(p for p in env.get('PATH', '').split(os.pathsep)
                                  if str(ROOT) not in p)
    return env
