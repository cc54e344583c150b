"""Linting as tests, as ROS packages do (ament_flake8 / ament_pep257): ruff with matching rules."""
import subprocess
import sys

from helpers import ROOT


def test_ruff():
    result = subprocess.run([sys.executable, '-m', 'ruff', 'check', '--no-cache', '.'], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
