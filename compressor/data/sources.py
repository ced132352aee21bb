"""Where datasets live on disk, and how Fashion-MNIST gets there.

Search order for Fashion-MNIST: an explicit ``data_dir``, ``$COMPRESSOR_DATA``, the Debian
package's folder (``apt install dataset-fashion-mnist``), then the user cache
(``$XDG_CACHE_HOME/compressor/fashion-mnist``, by default ``~/.cache/compressor/fashion-mnist``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path

from compressor.errors import CompressorError, DataNotFoundError

__all__ = [
    "FASHION_MNIST_FILES",
    "DEBIAN_FASHION_MNIST_DIR",
    "cache_dir",
    "fashion_mnist_search_path",
    "find_fashion_mnist",
    "ensure_fashion_mnist",
]

DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# File name -> MD5 of the gzip file as published by the dataset's authors.
FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
INSTALL_HINT = (
    "Install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or run "
    "`compressor fetch-data` to download it into the cache folder, or point `data_dir` / "
    "$COMPRESSOR_DATA at a folder holding the four *-ubyte.gz files."
)


def cache_dir() -> Path:
    """The user cache folder of compressor (``$XDG_CACHE_HOME/compressor``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "compressor"


def fashion_mnist_search_path(data_dir: str | Path | None = None) -> list[Path]:
    """Folders searched for Fashion-MNIST, in order."""
    candidates: list[Path] = []
    for root in (data_dir, os.environ.get("COMPRESSOR_DATA")):
        if root:
            candidates += [Path(root), Path(root) / "fashion-mnist"]
    return candidates + [DEBIAN_FASHION_MNIST_DIR, cache_dir() / "fashion-mnist"]


def _has_all_files(folder: Path) -> bool:
    return all((folder / name).is_file() for name in FASHION_MNIST_FILES)


def find_fashion_mnist(data_dir: str | Path | None = None) -> Path:
    """Return the first folder that holds all four Fashion-MNIST files.

    Raises:
        DataNotFoundError: listing every folder searched and how to install the data.
    """
    searched = fashion_mnist_search_path(data_dir)
    for folder in searched:
        if _has_all_files(folder):
            return folder
    places = "\n".join(f"  - {folder}" for folder in searched)
    raise DataNotFoundError(f"Fashion-MNIST not found. Looked for {', '.join(FASHION_MNIST_FILES)} "
                            f"in:\n{places}\n{INSTALL_HINT}")


def ensure_fashion_mnist(allow_apt: bool = True, allow_download: bool = True) -> Path:
    """Make Fashion-MNIST available: already present, else apt (when root or passwordless sudo),
    else download into the cache folder. Returns the folder holding the files."""
    try:
        return find_fashion_mnist()
    except DataNotFoundError:
        pass
    if allow_apt and _install_with_apt():
        return find_fashion_mnist()
    if allow_download:
        return download_fashion_mnist(cache_dir() / "fashion-mnist")
    return find_fashion_mnist()


def _apt_prefix() -> list[str] | None:
    """The command prefix that may run apt-get non-interactively, or None if apt is not usable."""
    if shutil.which("apt-get") is None:
        return None
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n"]
    return None


def _install_with_apt() -> bool:
    prefix = _apt_prefix()
    if prefix is None:
        return False
    install = prefix + ["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(install, env=env).returncode != 0:
        subprocess.run(prefix + ["apt-get", "update", "-q"], env=env)
        if subprocess.run(install, env=env).returncode != 0:
            return False
    return _has_all_files(DEBIAN_FASHION_MNIST_DIR)


def download_fashion_mnist(folder: Path, base_url: str = FASHION_MNIST_URL) -> Path:
    """Download the four files into ``folder``, checking each MD5; writes are atomic."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, md5 in FASHION_MNIST_FILES.items():
        target = folder / name
        if target.is_file() and _md5(target) == md5:
            continue
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".part", delete=False) as tmp:
            try:
                with urllib.request.urlopen(base_url + name, timeout=60) as response:
                    shutil.copyfileobj(response, tmp)
            except OSError as error:
                Path(tmp.name).unlink(missing_ok=True)
                raise DataNotFoundError(f"Could not download {base_url + name}: {error}. "
                                        f"{INSTALL_HINT}") from error
        if _md5(Path(tmp.name)) != md5:
            Path(tmp.name).unlink(missing_ok=True)
            raise CompressorError(f"Downloaded {name} has the wrong MD5 checksum (expected {md5}); "
                                  "the download was corrupted, try again.")
        os.replace(tmp.name, target)
    return folder


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
