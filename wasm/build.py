"""Build the WebAssembly modules from source: `python wasm/build.py`.

Needs the `ziglang` PyPI package in the running interpreter.  Copies the Zig
sources and the generated Unicode tables into wasm/build/src (Zig only
imports files under the root file's directory, and generated code should not
sit next to the sources), then compiles each module for wasm32-freestanding:
no WASI or other imports, so any wasm runtime can host it.

Outputs: wasm/build/tokenizer.wasm, wasm/build/image.wasm, also copied to
aigc/wasm/modules/, where the runtime (and every template, through its link
to aigc/) ships them. -fstrip makes a build byte-identical wherever it runs,
so the committed modules are checked against a fresh build by the tests.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"
SHIPPED = HERE.parent / "aigc" / "wasm" / "modules"
MODULES = {"tokenizer": "tokenizer.zig", "image": "image.zig"}


def _generate_tables(dest: Path) -> None:
    sys.dont_write_bytecode = True  # keep wasm/ free of __pycache__
    sys.path.insert(0, str(HERE))
    try:
        import gen_unicode
    finally:
        sys.path.pop(0)
    text = gen_unicode.generate()
    if not dest.exists() or dest.read_text() != text:
        dest.write_text(text)


def _zig(args: list[str], cwd: Path, env: dict[str, str]) -> None:
    cmd = [sys.executable, "-m", "ziglang", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"zig failed ({proc.returncode}): {' '.join(cmd)}")


def build(out_dir: Path, optimize: str = "ReleaseFast") -> dict[str, Path]:
    try:
        import ziglang  # noqa: F401
    except ImportError:
        raise SystemExit("the `ziglang` package is required: pip install ziglang==0.17.1")
    src_copy = out_dir / "src"
    src_copy.mkdir(parents=True, exist_ok=True)
    for f in SRC.glob("*.zig"):
        shutil.copyfile(f, src_copy / f.name)
    _generate_tables(src_copy / "unicode_tables.zig")

    env = dict(os.environ)
    # Keep Zig's per-project cache inside the build folder.
    env["ZIG_LOCAL_CACHE_DIR"] = str(out_dir / ".zig-cache")
    built = {}
    for name, root in MODULES.items():
        target = out_dir / f"{name}.wasm"
        tmp = out_dir / f".{name}.wasm.tmp"
        start = time.perf_counter()
        _zig(["build-exe", root, "-target", "wasm32-freestanding", "-fno-entry", "-rdynamic",
              "-O", optimize, "-fstrip", f"-femit-bin={tmp}"], cwd=src_copy, env=env)
        os.replace(tmp, target)
        digest = hashlib.sha256(target.read_bytes()).hexdigest()[:16]
        print(f"built {target} ({target.stat().st_size} bytes, "
              f"sha256 {digest}, {time.perf_counter() - start:.1f}s)")
        built[name] = target
    return built


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE / "build", help="output folder")
    ap.add_argument("-O", dest="optimize", default="ReleaseFast",
                    choices=["ReleaseFast", "ReleaseSafe", "ReleaseSmall", "Debug"])
    ap.add_argument("--no-ship", action="store_true", help=f"do not copy the modules to {SHIPPED}")
    args = ap.parse_args()
    built = build(args.out.resolve(), args.optimize)
    if not args.no_ship and args.optimize == "ReleaseFast":
        SHIPPED.mkdir(exist_ok=True)
        for name, path in built.items():
            dest = SHIPPED / f"{name}.wasm"
            if not dest.is_file() or dest.read_bytes() != path.read_bytes():
                shutil.copyfile(path, dest)
                print(f"updated {dest}")


if __name__ == "__main__":
    main()
