"""Benchmark the wasm layer against the libraries it replaces, side by side in one run.

    python bench/wasm_bench.py [--runs 5] [--mb 8]

Prints:
  (a) tokenizer throughput, one thread, MB/s on the same corpus (the first
      --mb MB of this interpreter's stdlib .py files): aigc.wasm vs `tokenizers`
      vs `tiktoken` (GPT-2 only: an Encoding built from the same vocabulary,
      ranks = ids, GPT-2's split pattern, <|endoftext|> special);
  (b) time to a ready tokenizer in a fresh process: from the script's first
      line (before `import aigc.wasm`) to the first encode returning, and the
      whole process; vs tokenizers.Tokenizer.from_file and
      transformers.AutoTokenizer.from_pretrained.  aigc.wasm runs twice: from
      this checkout as the environment imports it (with PYTHONDONTWRITEBYTECODE
      set and no .pyc, Python compiles aigc/wasm's sources in every process),
      and from a temporary copy of `aigc` with compiled bytecode, as an image
      that ships .pyc files would run it;
  (c) fuel metering on vs off (two engine configurations, separate caches);
  (d) image preprocessing: aigc.wasm classifier geometry vs the native
      PIL + numpy path (aigc.runtime.images.classifier_input), same output;
  (e) compiling the modules vs loading them from the cache.
Reference files are the test fixtures (tests/wasm/wasm_fixtures.py).
"""

from __future__ import annotations

import os

# One thread for the reference libraries, set before they are imported.
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "wasm"))

import wasm_fixtures  # noqa: E402

SENTENCE = "Serverless functions pay for every import at cold start."
READY = {
    "aigc.wasm": "import aigc.wasm\ntok = aigc.wasm.Tokenizer.from_file(PATH)\n"
                 "ids = tok.encode(SENTENCE)\n",
    "tokenizers": "import tokenizers\ntok = tokenizers.Tokenizer.from_file(PATH)\n"
                  "ids = tok.encode(SENTENCE).ids\n",
    "transformers": "from transformers import AutoTokenizer\n"
                    "tok = AutoTokenizer.from_pretrained(DIR)\nids = tok(SENTENCE)['input_ids']\n",
}


def median_time(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def corpus(limit_mb: float) -> list[str]:
    texts, size = [], 0
    for text in wasm_fixtures.stdlib_texts():
        texts.append(text)
        size += len(text.encode())
        if size >= limit_mb * 1e6:
            break
    return texts


def gpt2_tiktoken():
    """A tiktoken Encoding with GPT-2's vocabulary from the fixture."""
    import tiktoken

    from aigc.wasm.tokenizer_spec import GPT2_PATTERN

    own = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    extra = iter(range(256, 512))
    char_to_byte = {chr(b) if b in own else chr(next(extra)): b for b in range(256)}
    vocab, _ = wasm_fixtures.gpt2_vocab_and_merges()
    ranks = {bytes(char_to_byte[c] for c in tok): i for tok, i in vocab.items()}
    return tiktoken.Encoding("gpt2-fixture", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": 50256})


def bench_throughput(paths: dict, texts: list[str], runs: int) -> None:
    import tokenizers

    from aigc.wasm import Tokenizer

    mb = sum(len(t.encode()) for t in texts) / 1e6
    print(f"\n(a) throughput, one thread, {mb:.1f} MB of stdlib source ({len(texts)} files), "
          f"median of {runs}")
    for name, path in paths.items():
        ours = Tokenizer.from_file(path)
        ref = tokenizers.Tokenizer.from_file(str(path))
        ref.no_padding()
        ref.no_truncation()
        kw = dict(padding=False, truncation=False, add_special_tokens=False)
        got = ours.encode_batch(texts, **kw).ids
        same = got == [e.ids for e in ref.encode_batch(texts, add_special_tokens=False)]
        rows = [("aigc.wasm", median_time(lambda: ours.encode_batch(texts, **kw), runs)),
                ("tokenizers", median_time(lambda: ref.encode_batch(texts, add_special_tokens=False),
                                           runs))]
        if name == "gpt2":
            enc = gpt2_tiktoken()
            same &= [enc.encode(t, allowed_special="all") for t in texts] == got
            rows.append(("tiktoken", median_time(
                lambda: [enc.encode(t, allowed_special="all") for t in texts], runs)))
        base = rows[0][1]
        for label, t in rows:
            ratio = "" if label == "aigc.wasm" else f"   aigc.wasm = {t / base:5.2f}x this"
            print(f"    {name:8s} {label:11s} {mb / t:7.1f} MB/s{ratio}")
        print(f"    {name:8s} ids identical across libraries: {same}")


def _ready_once(kind: str, path: Path, folder: Path, env: dict) -> tuple[float, float]:
    code = ("import time; t0 = time.perf_counter()\n"
            f"PATH = {str(path)!r}; DIR = {str(folder)!r}; SENTENCE = {SENTENCE!r}\n"
            + READY[kind.split(" ")[0]]
            + "t1 = time.perf_counter(); import json; print(json.dumps(t1 - t0))\n")
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], cwd=env.get("CWD", REPO), env=env,
                         capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1]), wall


def _bytecode_copy(tmp: Path) -> Path:
    """A copy of the `aigc` package with compiled .pyc files (py_compile writes
    them even under PYTHONDONTWRITEBYTECODE; the checkout is left untouched)."""
    import compileall

    root = tmp / "bytecode"
    shutil.copytree(REPO / "aigc", root / "aigc",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    if not compileall.compile_dir(str(root / "aigc"), quiet=1):
        raise RuntimeError("compileall failed")
    return root


def bench_ready(paths: dict, runs: int) -> None:
    from aigc.wasm import engine

    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    bare = median_time(lambda: subprocess.run([sys.executable, "-c", "pass"], env=env, check=True),
                       runs)
    print(f"\n(b) ready tokenizer in a fresh process (warm module and snapshot caches, warm page "
          f"cache), median of {runs} processes; bare `python -c pass` = {bare * 1000:.0f} ms")
    with tempfile.TemporaryDirectory() as tmp:
        copy = _bytecode_copy(Path(tmp))
        envs = {"aigc.wasm": env,
                "aigc.wasm (.pyc)": dict(env, PYTHONPATH=str(copy), CWD=str(copy),
                                         AIGC_WASM_DIR=str(engine.module_dir()))}
        for name, path in paths.items():
            folder = Path(tmp) / name
            folder.mkdir()
            shutil.copyfile(path, folder / "tokenizer.json")
            (folder / "tokenizer_config.json").write_text(
                json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}))
            # Fill the caches, let the new files age past the index's racy window
            # (engine.RACY_NS), then load once more so they are recorded as verified.
            _ready_once("aigc.wasm", path, folder, env)
            time.sleep(engine.RACY_NS / 1e9 + 0.1)
            _ready_once("aigc.wasm", path, folder, env)
            res = {}
            for kind in ("aigc.wasm", "aigc.wasm (.pyc)", *list(READY)[1:]):
                kind_env = envs.get(kind, env)
                samples = [_ready_once(kind, path, folder, kind_env) for _ in range(runs)]
                res[kind] = tuple(statistics.median(s[i] for s in samples) for i in (0, 1))
            base = res["aigc.wasm"][0]
            for kind, (inside, wall) in res.items():
                ratio = ("" if kind.startswith("aigc.wasm")
                         else f"   ({inside / base:5.1f}x aigc.wasm)")
                print(f"    {name:8s} {kind:16s} first line -> first ids {inside * 1000:7.1f} ms, "
                      f"whole process {wall * 1000:7.1f} ms{ratio}")
    print("    target: aigc.wasm <= 20 ms from first line to first ids")


def bench_fuel(path: Path, texts: list[str], runs: int) -> None:
    import numpy as np
    import skimage.data

    from aigc.wasm import ImagePreprocessor, Tokenizer

    print(f"\n(c) fuel metering on vs off, median of {runs}")
    kw = dict(padding=False, truncation=False)
    timings = {}
    for fuel in (True, False):
        tok = Tokenizer.from_file(path, fuel=fuel)
        tok.encode_batch(texts[:10], **kw)
        timings[fuel] = median_time(lambda: tok.encode_batch(texts, **kw), runs)
    print(f"    gpt2 encode:  fuel on {timings[True]:6.2f} s, off {timings[False]:6.2f} s "
          f"-> metering costs {100 * (timings[True] / timings[False] - 1):+5.1f}%")
    img = skimage.data.astronaut()
    for fuel in (True, False):
        pre = ImagePreprocessor.classifier(224, 448, fuel=fuel)
        pre(img)
        timings[fuel] = median_time(lambda: pre(img), runs * 4)
    print(f"    image 512x512: fuel on {timings[True] * 1e3:6.2f} ms, off "
          f"{timings[False] * 1e3:6.2f} ms -> metering costs "
          f"{100 * (timings[True] / timings[False] - 1):+5.1f}%")
    assert np.isfinite(timings[True])


def bench_image(runs: int) -> None:
    import numpy as np
    import skimage.data

    from aigc.runtime.images import classifier_input
    from aigc.wasm import IMAGENET_MEAN, IMAGENET_STD, ImagePreprocessor

    print(f"\n(d) image preprocessing (classifier geometry 224/448), median of {runs * 4}")
    pre = ImagePreprocessor.classifier(224, 448)
    for name in ("chelsea", "coffee", "astronaut"):
        img = getattr(skimage.data, name)()
        diff = float(np.abs(pre(img)[0] - classifier_input(img, 224, 448, IMAGENET_MEAN,
                                                           IMAGENET_STD)).max())
        t_wasm = median_time(lambda: pre(img), runs * 4)
        t_pil = median_time(lambda: classifier_input(img, 224, 448, IMAGENET_MEAN, IMAGENET_STD),
                            runs * 4)
        print(f"    {name:9s} {img.shape[0]}x{img.shape[1]}: aigc.wasm {t_wasm * 1e3:6.2f} ms, "
              f"PIL+numpy {t_pil * 1e3:6.2f} ms (aigc.wasm = {t_pil / t_wasm:4.2f}x PIL speed), "
              f"max |diff| {diff:.1e}")


def bench_modules(runs: int) -> None:
    from aigc.wasm import capi, engine

    print(f"\n(e) module load, median of {runs}")
    eng = engine.engine()
    for name in ("tokenizer", "image"):
        wasm = engine.wasm_path(name).read_bytes()
        with tempfile.TemporaryDirectory() as tmp:
            cached = Path(tmp) / "m.cwasm"  # new, so never in the index: checksum every time
            key = engine.cache_key(wasm)
            engine.write_blob(cached, key, capi.Module.compile(eng, wasm).serialize())
            t_compile = median_time(lambda: capi.Module.compile(eng, wasm), runs)
            t_cache = median_time(lambda: engine._read_cache(cached, key, eng), runs)
        print(f"    {name:9s} {len(wasm) / 1024:5.0f} KiB wasm: compile {t_compile * 1e3:7.1f} ms, "
              f"cache load (checksum + deserialize) {t_cache * 1e3:5.2f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mb", type=float, default=8.0, help="corpus size for (a) and (c)")
    args = ap.parse_args()
    paths = {"gpt2": wasm_fixtures.prepare_gpt2(),
             "smollm2": wasm_fixtures.prepare_smollm2()["real"],
             "minilm": wasm_fixtures.prepare_minilm()}
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, "
          f"RAYON_NUM_THREADS={os.environ['RAYON_NUM_THREADS']}")
    texts = corpus(args.mb)
    bench_throughput(paths, texts, max(1, args.runs // 2))
    bench_ready(paths, args.runs * 2)
    bench_fuel(paths["gpt2"], texts, max(1, args.runs // 2))
    bench_image(args.runs)
    bench_modules(args.runs)


if __name__ == "__main__":
    main()
