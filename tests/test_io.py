"""softguard.io: a write that fails (disk full) leaves nothing half-written; per-file hashes; exclusive locks."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import softguard
from softguard import io as sgio
from softguard.io import LockedError, atomic_dir, atomic_write_text, changed_file, exclusive_lock, file_hashes


def disk_full(monkeypatch) -> None:
    """Every text file softguard.io opens for writing fails its write with ENOSPC, as on a full disk."""

    def open_(path, *args, **kwargs):
        f = open(path, *args, **kwargs)  # noqa: SIM115 (returned to softguard.io's own `with`)

        def write(_text):
            raise OSError(errno.ENOSPC, "No space left on device")

        f.write = write
        return f

    monkeypatch.setattr(sgio, "open", open_, raising=False)


def test_failed_text_write_keeps_the_old_file_and_names_the_path(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    target.write_text("old")
    disk_full(monkeypatch)
    with pytest.raises(OSError) as err:
        atomic_write_text(target, "new")
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(target)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_failed_directory_write_keeps_the_old_directory_and_names_it(tmp_path):
    final = tmp_path / "guard"
    final.mkdir()
    (final / "a.txt").write_text("old")
    with pytest.raises(OSError) as err, atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(final)
    assert [p.name for p in tmp_path.iterdir()] == ["guard"] and (final / "a.txt").read_text() == "old"
    with pytest.raises(PermissionError) as err, atomic_dir(final):  # the subclass survives the renaming
        raise PermissionError(errno.EACCES, "Permission denied")
    assert err.value.filename == str(final)


def test_file_hashes_and_changed_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.bin").write_bytes(b"a")
    (tmp_path / "sub" / "b.txt").write_text("b")
    (tmp_path / "config.json").write_text("{}")
    hashes = file_hashes(tmp_path, exclude=("config.json",))
    assert list(hashes) == ["a.bin", "sub/b.txt"]
    assert changed_file(tmp_path, hashes) is None
    (tmp_path / "sub" / "b.txt").write_text("B")
    assert changed_file(tmp_path, hashes) == f"{tmp_path / 'sub' / 'b.txt'} was changed or is corrupt " + (
        "(its sha256 differs from the one recorded at save time)"
    )
    (tmp_path / "a.bin").unlink()
    assert changed_file(tmp_path, hashes) == f"{tmp_path / 'a.bin'} is missing"


def test_lock_refuses_a_second_holder_and_is_released(tmp_path):
    lock = tmp_path / "run" / ".lock"
    busy = "run is in use by process {pid}"
    with exclusive_lock(lock, busy):
        assert lock.read_text().strip() == str(os.getpid())
        with pytest.raises(LockedError, match=f"run is in use by process {os.getpid()}$"), exclusive_lock(lock, busy):
            pass
    with exclusive_lock(lock, ""):  # released at the end of the block
        pass


def test_lock_of_a_killed_process_does_not_block(tmp_path):
    """flock belongs to the process: once its holder is killed (-9, no cleanup) the lock is free again."""
    lock = tmp_path / ".lock"
    script = (
        "import sys, time\nfrom softguard.io import exclusive_lock\n"
        "with exclusive_lock(sys.argv[1], ''):\n    print('locked', flush=True)\n    time.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(softguard.__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", script, str(lock)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError, match=f"held by {proc.pid}"), exclusive_lock(lock, "held by {pid}"):
            pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert lock.is_file()  # the file stays behind, but it is no lock
    with exclusive_lock(lock, "held by {pid}"):
        assert lock.read_text().strip() == str(os.getpid())


def test_disk_full_while_saving_a_guard_keeps_the_previous_guard(backbone, tmp_path, monkeypatch):
    """safetensors reports a full disk as its own error; the save names the guard directory as an ENOSPC OSError
    and leaves the guard saved before it as it was, with no temporary directory."""
    from safetensors import SafetensorError

    from softguard.guards import EncoderGuard

    guard = EncoderGuard.from_backbone(backbone, max_length=16)
    out = guard.save_pretrained(tmp_path / "guard")
    before = file_hashes(out)

    def full(*a, **k):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr("softguard.guards.save_file", full)
    with pytest.raises(OSError) as err:
        guard.save_pretrained(out)
    assert (err.value.errno, err.value.filename) == (errno.ENOSPC, str(out))
    assert file_hashes(out) == before and [p.name for p in tmp_path.iterdir()] == ["guard"]
