"""Running `my` command lines from a benchmark script, the way a user types them, and reading what they print."""

import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EVAL_LINE = re.compile(r"^top1: ([\d.]+)%, top5: ([\d.]+)%(?:, density: ([\d.]+)%)?$", re.MULTILINE)


def my(workdir, *arguments):
    """Runs `./my ARGUMENTS` in `workdir`, echoing its output; returns its stdout. Exits if the command fails."""
    print("$ my " + " ".join(arguments), flush=True)
    started = time.monotonic()
    result = subprocess.run([str(ROOT / "my"), *arguments], cwd=workdir, stdout=subprocess.PIPE, text=True)
    print(result.stdout, end="", flush=True)
    print(f"({time.monotonic() - started:.0f} s)", flush=True)
    if result.returncode != 0:
        sys.exit(f"`my {' '.join(arguments)}` failed with status {result.returncode}")
    return result.stdout


def evaluations(output):
    """(top-1 %, gate density % or None) of every `eval` line in `output`, in order."""
    return [(float(top1), float(density) if density else None) for top1, _, density in EVAL_LINE.findall(output)]


def total_macs(info_output):
    """The dense MACs of the `info` summary line."""
    return int(re.search(r"([\d,]+) MACs \(", info_output).group(1).replace(",", ""))


def effective_macs(info_output):
    """The effective MACs of `info`'s summary with gates or pruning masks."""
    return int(re.search(r"effective ([\d,]+) MACs", info_output).group(1).replace(",", ""))
