"""A run folder that cannot be written is refused in a second, naming it, before any work."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from nnsight_inoc.core.errors import UsageProblem
from nnsight_inoc.core.writable import NotWritable, check_writable


def read_only(folder: Path) -> None:
    """Make ``folder`` unwritable even for root (an immutable folder), else by its mode bits."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)]).returncode != 0:
            pytest.skip("root without a working chattr: cannot make a folder read-only")
    else:
        folder.chmod(0o555)


def writable_again(folder: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(folder)], check=False)
    else:
        folder.chmod(0o755)


def test_read_only_folder_and_its_missing_child(tmp_path):
    ro = tmp_path / "ro"
    read_only(ro)
    try:
        with pytest.raises(NotWritable, match=f"run folder {ro} is not writable"):
            check_writable(ro)
        with pytest.raises(NotWritable, match=f"would be created in {ro}"):  # a new run folder inside it
            check_writable(ro / "new" / "run")
    finally:
        writable_again(ro)
    assert issubclass(NotWritable, UsageProblem)  # exit code 2 in the CLI


def test_a_file_in_the_way(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotWritable, match="is a file, not a folder"):
        check_writable(tmp_path / "f" / "run")


def test_writable_folder_passes_and_keeps_nothing(tmp_path):
    check_writable(tmp_path / "new")
    check_writable(tmp_path)
    assert list(tmp_path.iterdir()) == []
