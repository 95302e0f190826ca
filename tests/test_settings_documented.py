"""Every setting of `app.config.Settings` has a row in a settings table of the README (the one
of "Configuration", or the table of the section the setting belongs to, such as the pharmacy
delivery's), so a new user can find what the portal reads from its environment."""

from __future__ import annotations

import re
from pathlib import Path

from app.config import Settings

README = Path(__file__).resolve().parent.parent / "README.md"


SETTINGS_TABLE = "| variable | default | meaning |"


def documented_settings() -> set[str]:
    """The variables named in the first column of the README's settings tables. A row may name
    several (`API_HOST`, `API_PORT`) or abbreviate the next one by its suffix (`_PER_HOUR`)."""
    names: set[str] = set()
    in_table = False
    for line in README.read_text(encoding="utf-8").splitlines():
        in_table = line == SETTINGS_TABLE or (in_table and line.startswith("|"))
        if not (in_table and line.startswith("| `")):
            continue
        previous = ""
        for name in re.findall(r"`([A-Z0-9_]+)`", line.split("|")[1]):
            if name.startswith("_"):  # `_PER_HOUR` after `RATE_LIMIT_X_PER_MINUTE`
                name = previous[: previous.rindex(name.split("_")[1]) - 1] + name
            names.add(name)
            previous = name
    return names


def test_every_setting_has_a_row_in_the_readmes_settings_table() -> None:
    assert {name.upper() for name in Settings.model_fields} - documented_settings() == set()
