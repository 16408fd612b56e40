"""The README's promises point at tests that exist."""

from __future__ import annotations

import re

from conftest import REPO


def test_every_guarantee_names_tests_that_exist():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## What hfkit guarantees"):text.index("## Recipes")]
    rows = [line for line in section.splitlines() if line.startswith("| **")]
    assert len(rows) >= 8
    for row in rows:
        named, current = 0, None
        for file, test, same_file, whole in re.findall(
                r"`(?:(test_\w+\.py)(?:::(\w+))?|::(\w+))`|`tests/(test_\w+\.py)`", row):
            if whole:
                assert (REPO / "tests" / whole).is_file(), whole
                named += 1
                continue
            current = file or current
            name = test or same_file
            assert f"def {name}(" in (REPO / "tests" / current).read_text(encoding="utf-8"), (current, name)
            named += 1
        assert named, row
