"""The atomic writer and the file lock, on real files."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import filelock
import pytest

from workbench.config import file_mode
from workbench.files import atomic_path, atomic_write, exclusive_write, file_lock


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_atomic_write_text_and_bytes(tmp_path: Path) -> None:
    target = tmp_path / "CURRENT"
    assert atomic_write(target, "3\n") == target
    assert target.read_text() == "3\n"
    atomic_write(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert target.stat().st_mode & 0o777 == file_mode()  # not mkstemp's 0600
    assert _hidden(tmp_path) == []


def test_an_error_inside_the_block_leaves_the_old_file_intact(tmp_path: Path) -> None:
    target = tmp_path / "table.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".table.csv.")
        tmp.write_text("half of the new")
        raise RuntimeError("disk full")
    assert target.read_text() == "old\n" and _hidden(tmp_path) == []


def test_a_process_killed_mid_write_leaves_the_old_file_intact(tmp_path: Path) -> None:
    target = tmp_path / "data.parquet"
    target.write_text("old")
    script = (
        "import os, sys\nfrom workbench.files import atomic_path\n"
        f"with atomic_path({str(target)!r}) as tmp:\n"
        "    tmp.write_text('half')\n"
        "    os._exit(9)\n"  # dies without cleaning up, as a SIGKILL would
    )
    proc = subprocess.run([sys.executable, "-c", script], env={**os.environ}, check=False)
    assert proc.returncode == 9
    assert target.read_text() == "old"
    assert all(name.endswith(".tmp") for name in _hidden(tmp_path))  # a hidden leftover at most


def test_unique_temporary_names_for_concurrent_writers(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    with atomic_path(target) as a, atomic_path(target) as b:
        assert a != b
        a.write_text("a")
        b.write_text("b")
    assert target.read_text() == "a"  # the outer block finished last
    assert _hidden(tmp_path) == []


def test_exclusive_write_never_replaces(tmp_path: Path) -> None:
    target = tmp_path / "v1.json"
    assert exclusive_write(target, "{}")
    assert not exclusive_write(target, '{"other": 1}')
    assert target.read_text() == "{}" and _hidden(tmp_path) == []


def test_file_lock_excludes_a_second_holder(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with file_lock(path):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(10)
        with pytest.raises(filelock.Timeout):
            file_lock(path).acquire(timeout=0.2)
    finally:
        release.set()
        thread.join()
    with file_lock(path):
        pass
    assert path.exists()  # kept in place for the next writer
