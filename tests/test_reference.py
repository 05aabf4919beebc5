"""docs/reference.md is what scripts/reference.py generates from the code today: regenerate it after changing an
action, a default or a table (`.venv/bin/python scripts/reference.py`)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_reference_page_is_current():
    spec = importlib.util.spec_from_file_location("reference", ROOT / "scripts/reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (ROOT / "docs/reference.md").read_text() == module.page(), \
        "docs/reference.md is out of date: run .venv/bin/python scripts/reference.py"


def test_every_default_has_a_meaning_and_every_action_is_listed():
    text = (ROOT / "docs/reference.md").read_text()
    from mayo_lite.session.actions import ACTIONS

    assert all(f"| `{name}` |" in text for name in ACTIONS)
    rows = [line for line in text.splitlines() if line.startswith("| `system.")]
    assert len(rows) >= 25 and all(not line.rstrip(" |").endswith("|") for line in rows)
