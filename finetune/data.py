"""The Coq corpus: `.v` files from Debian's libcoq-* packages, de-duplicated and split by file.

    python -m finetune data            # download, extract, split -> $AIGC_FINETUNE_DATA (finetune/data)

Steps, each deterministic:
1. `apt-get download` every `libcoq-*` package of the pinned list (the OCaml
   plugin packages carry no `.v`), then `dpkg-deb -x` each into `debs/<package>/`.
2. Every `.v` file is read as UTF-8; files with the same content after
   normalising whitespace (trailing blanks, line ends) are one file: the
   copy with the smallest `<package>/<path>` is kept.
3. A file goes to train / validation / test by the sha256 of its
   `<package>/<path>`, so the split does not depend on the order of anything
   and a file keeps its split when others come or go.

`split.json` lists every kept file with its sha256 and split; its own digest
(`split_digest`) is printed and recorded in the data card, so a rerun shows
at a glance whether it reproduced the same split.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

# Debian bookworm's Coq 8.16 libraries (the ones shipping `.v` sources); versions come from apt.
PACKAGES = (
    "libcoq-aac-tactics", "libcoq-bignums", "libcoq-coqeal", "libcoq-coqprime", "libcoq-coquelicot",
    "libcoq-corn", "libcoq-deriving", "libcoq-dpdgraph", "libcoq-elpi", "libcoq-equations", "libcoq-ext-lib",
    "libcoq-extructures", "libcoq-flocq", "libcoq-gappa", "libcoq-hammer", "libcoq-hierarchy-builder",
    "libcoq-hott", "libcoq-interval", "libcoq-iris", "libcoq-libhyps", "libcoq-math-classes",
    "libcoq-mathcomp", "libcoq-mathcomp-abel", "libcoq-mathcomp-algebra", "libcoq-mathcomp-algebra-tactics",
    "libcoq-mathcomp-analysis", "libcoq-mathcomp-bigenough", "libcoq-mathcomp-character",
    "libcoq-mathcomp-field", "libcoq-mathcomp-finmap", "libcoq-mathcomp-fingroup",
    "libcoq-mathcomp-multinomials", "libcoq-mathcomp-real-closed", "libcoq-mathcomp-solvable",
    "libcoq-mathcomp-ssreflect", "libcoq-mathcomp-zify", "libcoq-menhirlib", "libcoq-mtac2", "libcoq-ott",
    "libcoq-paramcoq", "libcoq-quickchick", "libcoq-record-update", "libcoq-reduction-effects",
    "libcoq-reglang", "libcoq-relation-algebra", "libcoq-simple-io", "libcoq-stdlib", "libcoq-stdpp",
    "libcoq-unicoq", "libcoq-unimath",
)
SPLITS = ("train", "validation", "test")
# per mille of the path hash: [0, 900) train, [900, 950) validation, [950, 1000) test
BOUNDS = (900, 950)


class DataError(ValueError):
    """The corpus cannot be built or read (raised before any training starts)."""


@dataclass(frozen=True)
class SourceFile:
    key: str        # <package>/<path inside the package>
    package: str
    sha256: str     # of the bytes as shipped
    size: int
    split: str


def split_of(key: str) -> str:
    bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 1000
    return SPLITS[0] if bucket < BOUNDS[0] else SPLITS[1] if bucket < BOUNDS[1] else SPLITS[2]


def normalised(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").split("\n")).strip() + "\n"


def download(debs: Path) -> dict[str, str]:
    """Fetch and extract the packages (already extracted ones are kept); returns package -> version."""
    debs.mkdir(parents=True, exist_ok=True)
    archives = debs / "archives"
    archives.mkdir(exist_ok=True)
    missing = [p for p in PACKAGES if not list(archives.glob(f"{p}_*.deb"))]
    if missing:
        done = subprocess.run(["apt-get", "download", *missing], cwd=archives, capture_output=True, text=True)
        if done.returncode:
            raise DataError(f"apt-get download failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    versions = {}
    for package in PACKAGES:
        (deb,) = archives.glob(f"{package}_*.deb")
        versions[package] = deb.name.split("_")[1].replace("%3a", ":")
        target = debs / package
        if not target.is_dir():
            tmp = debs / f".{package}.tmp"
            subprocess.run(["rm", "-rf", str(tmp)], check=True)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
            tmp.rename(target)
    return versions


_LICENSE = re.compile(r"^License:\s*(\S.*)$", re.M)


def licences(debs: Path, package: str) -> dict[str, object]:
    """The Debian copyright file's licence of `Files: *` and every licence it names."""
    copyright_file = debs / package / "usr/share/doc" / package / "copyright"
    if not copyright_file.is_file():
        return {"main": "unknown", "all": []}
    text = copyright_file.read_text(errors="replace")
    stanzas = text.split("\n\n")
    main = next((m.group(1).strip() for s in stanzas if re.search(r"^Files:\s*\*\s*$", s, re.M)
                 for m in [_LICENSE.search(s)] if m), "unknown")
    return {"main": main, "all": sorted({m.strip() for m in _LICENSE.findall(text)})}


def collect(debs: Path) -> tuple[list[SourceFile], int]:
    """Every distinct `.v` file, with its split; also the number of duplicates dropped."""
    seen: dict[str, str] = {}
    kept: list[SourceFile] = []
    dropped = 0
    for package in PACKAGES:
        root = debs / package
        for path in sorted(root.rglob("*.v")):
            if not path.is_file():
                continue
            key = f"{package}/{path.relative_to(root).as_posix()}"
            raw = path.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                dropped += 1
                continue
            content = hashlib.sha256(normalised(text).encode()).hexdigest()
            if content in seen:
                dropped += 1
                continue
            seen[content] = key
            kept.append(SourceFile(key, package, hashlib.sha256(raw).hexdigest(), len(raw), split_of(key)))
    # packages are walked in sorted order, so "first seen" is "smallest key" and the result is stable
    return kept, dropped


def digest(files: list[SourceFile]) -> str:
    lines = sorted(f"{f.split} {f.sha256} {f.key}" for f in files)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def prepare(data_dir: Path) -> dict[str, object]:
    """Build `data_dir/split.json` (and `debs/`); returns the summary written into it."""
    debs = data_dir / "debs"
    versions = download(debs)
    files, dropped = collect(debs)
    if not files:
        raise DataError(f"no .v files found under {debs}")
    summary: dict[str, object] = {
        "split_digest": digest(files),
        "files": {s: sum(f.split == s for f in files) for s in SPLITS},
        "bytes": {s: sum(f.size for f in files if f.split == s) for s in SPLITS},
        "duplicates_dropped": dropped,
        "packages": {p: {"version": versions[p], "files": sum(f.package == p for f in files),
                         "licence": licences(debs, p)} for p in PACKAGES},
    }
    out = dict(summary, entries=[f.__dict__ for f in files])
    tmp = data_dir / "split.json.tmp"
    tmp.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    tmp.replace(data_dir / "split.json")
    return summary


def load_split(data_dir: Path) -> dict[str, object]:
    path = Path(data_dir) / "split.json"
    if not path.is_file():
        raise DataError(f"{path} does not exist: run `python -m finetune data` first")
    return json.loads(path.read_text())


def split_paths(data_dir: Path, split: str) -> list[Path]:
    """The `.v` files of one split, as paths under `data_dir/debs`."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; one of {', '.join(SPLITS)}")
    entries = load_split(data_dir)["entries"]
    return [Path(data_dir) / "debs" / e["key"] for e in entries if e["split"] == split]


def package_files(data_dir: Path, split: str, packages: tuple[str, ...]) -> list[tuple[str, Path]]:
    """(key, path) of one split's files that belong to `packages`; the key is the path under `debs/`, whose
    first part is the package."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; one of {', '.join(SPLITS)}")
    return [(e["key"], Path(data_dir) / "debs" / e["key"]) for e in load_split(data_dir)["entries"]
            if e["split"] == split and e["key"].split("/")[0] in packages]


def corpus_files(corpus: Path) -> list[Path]:
    """A user-given corpus directory: all `.v` files below it, sorted; an error if there are none."""
    corpus = Path(corpus)
    if not corpus.is_dir():
        raise DataError(f"corpus {str(corpus)!r} is not a directory")
    files = sorted(p for p in corpus.rglob("*.v") if p.is_file())
    if not files:
        raise DataError(f"corpus {str(corpus)!r} contains no .v files")
    return files
