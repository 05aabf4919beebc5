"""docs/keras.md's examples run, in order, as one script in a fresh Python process, and print what the page says
they print; so does the README's Python example."""

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs/keras.md"


def run_blocks(document, directory):
    """The document's ```python blocks as one script in a fresh process: its standard output lines."""
    blocks = re.findall(r"```python\n(.*?)```", document.read_text(), flags=re.S)
    assert blocks, document
    result = subprocess.run([sys.executable, "-c", "\n".join(blocks)], cwd=directory, capture_output=True,
                            text=True, timeout=600,
                            env={"PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.splitlines()


def test_the_readme_python_example_runs(tmp_path):
    lines = run_blocks(ROOT / "README.md", tmp_path)
    assert any(line.startswith("with gates: effective") for line in lines)


def test_the_keras_page_examples_run_and_print_what_the_page_says(tmp_path):
    lines = run_blocks(PAGE, tmp_path)
    assert float(lines[0]) == 0.0                      # the masked copy computes what the original computes
    assert re.fullmatch(r"5\d\.\d% of the convolution weights pruned", lines[1])
    pruned = ast.literal_eval(lines[2])                 # GradualPruning: rising to the final 0.6
    assert pruned == sorted(pruned) and abs(pruned[-1] - 0.6) < 0.01
    assert float(lines[3]) == 0.0                       # saved and loaded
    assert float(lines[4]) < 1e-5                       # stripped
    widths = ast.literal_eval(lines[5])                 # narrowed: the channels holding half the weights gone
    assert len(widths) == 2 and 0 < widths[0] < 32 and 0 < widths[1] < 64
    assert float(lines[6]) < 1e-5                       # and the same outputs
    assert lines[7].startswith("gated 33 convolutions: conv1_conv")
    assert "300774272" in lines
