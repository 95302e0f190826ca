"""`make test` sets up the browser the tests drive: a fresh machine needs no step of its own.

The Makefile's `browser` target is run with a stand-in package manager (a script that records
its arguments and "installs" a chromium at a temporary path), so the logic is exercised without
touching the machine's packages.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_browser(tmp_path: Path, apt_get: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "make",
            "-s",
            "-C",
            str(ROOT),
            "browser",
            f"CHROMIUM={tmp_path / 'bin' / 'chromium'}",
            f"APT_GET={apt_get}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def stand_in_apt_get(tmp_path: Path) -> Path:
    """A package manager that logs each call and, on `install chromium`, creates the binary."""
    script = tmp_path / "apt-get"
    log = tmp_path / "apt.log"
    chromium = tmp_path / "bin" / "chromium"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {log}\n'
        'case "$*" in *install*chromium*)'
        f" mkdir -p {chromium.parent} && printf '#!/bin/sh\\n' > {chromium}"
        f" && chmod +x {chromium};; esac\n"
    )
    script.chmod(0o755)
    return script


def test_missing_chromium_is_installed_with_the_package_manager(tmp_path: Path) -> None:
    apt_get = stand_in_apt_get(tmp_path)
    can_install = os.geteuid() == 0 or (
        shutil.which("sudo") is not None
        and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0
    )

    result = make_browser(tmp_path, str(apt_get))

    if can_install:
        assert result.returncode == 0, result.stderr
        calls = (tmp_path / "apt.log").read_text().splitlines()
        assert calls[0].startswith("update")
        assert "install" in calls[1] and "chromium" in calls[1]
        assert os.access(tmp_path / "bin" / "chromium", os.X_OK)
    else:  # no way to install: stop with the command that fixes it
        assert result.returncode != 0
        assert "apt-get install -y chromium" in result.stderr


def test_present_chromium_installs_nothing(tmp_path: Path) -> None:
    apt_get = stand_in_apt_get(tmp_path)
    chromium = tmp_path / "bin" / "chromium"
    chromium.parent.mkdir()
    chromium.write_text("#!/bin/sh\n")
    chromium.chmod(0o755)

    result = make_browser(tmp_path, str(apt_get))

    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "apt.log").exists()


def test_without_a_package_manager_make_stops_with_the_fixing_command(tmp_path: Path) -> None:
    result = make_browser(tmp_path, str(tmp_path / "no-such-apt-get"))

    assert result.returncode != 0
    assert "sudo apt-get install -y chromium" in result.stderr
    assert not (tmp_path / "bin" / "chromium").exists()


def test_the_tests_run_only_after_the_browser_check() -> None:
    """`make test` and `make pytest` both depend on `browser` (what CI runs is `make test`)."""
    rules = subprocess.run(
        ["make", "-p", "-n", "-C", str(ROOT), "browser"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CHROMIUM": "/bin/sh"},
    ).stdout
    prerequisites = {
        line.split(":", 1)[0]: line.split(":", 1)[1].split()
        for line in rules.splitlines()
        if line.startswith(("test:", "pytest:"))
    }
    assert "browser" in prerequisites["test"]
    assert "browser" in prerequisites["pytest"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "apt-get" not in ci, "CI must prove what a new user runs: make test alone"
