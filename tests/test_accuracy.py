"""Long real-data checks of the README's claims (Fashion-MNIST); run with `pytest -m slow` (about 40 minutes)."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def top1_of(arguments, directory):
    result = subprocess.run([str(ROOT / "my"), *arguments], cwd=directory, capture_output=True, text=True,
                            timeout=3 * 3600)
    assert result.returncode == 0, result.stderr[-2000:]
    return float(re.search(r"^top1: ([\d.]+)%, top5: ", result.stdout, re.MULTILINE).group(1))


@pytest.mark.slow
def test_m_cifarnet_reaches_90_percent_in_three_epochs(tmp_path):
    top1 = top1_of(["models/cifarnet.yaml", "datasets/fashion_mnist.yaml", "trainers/cifarnet.yaml",
                    "system.max_epochs=3", "train", "eval"], tmp_path)
    assert top1 >= 90.0


@pytest.mark.slow
def test_the_readme_main_job_reaches_90_percent(tmp_path):
    top1 = top1_of(["models/cifarnet_slim.yaml", "datasets/fashion_mnist.yaml", "trainers/cifarnet.yaml",
                    "system.max_epochs=5", "train", "eval", "info"], tmp_path)
    assert top1 >= 90.0
