"""``make test`` provisions what the tests need beyond pip (README: nothing else to install)."""

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _make(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    fake = tmp_path / "apt-get"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "apt.log"}\n')
    fake.chmod(0o755)
    missing = str(tmp_path / "absent")
    return subprocess.run(
        ["make", "-s", "-C", str(REPO), "system-deps", f"CHROMIUM={missing}",
         f"PG_ROOT={missing}", f"APT_GET={fake}", *args],
        capture_output=True, text=True, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("MAKE")},
    )  # fmt: skip


def test_as_root_make_installs_the_missing_chromium_and_postgresql_with_apt_get(tmp_path):
    result = _make(tmp_path, "UID_NOW=0")
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "apt.log").read_text().splitlines()
    assert calls == ["update -qq", "install -y -qq chromium postgresql"]


def test_not_root_make_says_what_to_install_and_goes_on(tmp_path):
    result = _make(tmp_path, "UID_NOW=1000")
    assert result.returncode == 0
    assert "apt-get install -y chromium postgresql" in result.stdout
    assert not (tmp_path / "apt.log").exists()


def test_make_test_provisions_first_and_ci_only_runs_make_test():
    dry = subprocess.run(
        ["make", "-n", "-C", str(REPO), "test", "CHROMIUM=/nonexistent"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "Debian packages" in dry.stdout  # the system-deps recipe is part of `make test`
    ci = [
        line
        for line in (REPO / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "set ", "cd "))
    ]
    assert ci == ["make test"]


def test_every_test_module_has_a_basename_of_its_own():
    # The tiers are folders, not packages: two test files of one name make pytest refuse to
    # collect the second ("import file mismatch") in a whole-suite run, though each tier passes.
    names: dict[str, list[str]] = {}
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        names.setdefault(path.name, []).append(str(path.relative_to(REPO)))
    assert {n: p for n, p in names.items() if len(p) > 1} == {}
