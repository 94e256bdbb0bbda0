"""Fork and thread safety, and what `import aigc.wasm` costs."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

from aigc.wasm import ImagePreprocessor, Tokenizer

REPO = Path(__file__).resolve().parents[2]
TEXTS = ["Forked workers must not share wasm state.", "naïve café 你好 <|endoftext|> 123"]


def _child(tok, pre, queue):
    try:
        ids = tok.encode_batch(TEXTS).ids
        image = pre(np.full((50, 60, 3), 128, np.uint8))
        queue.put((os.getpid(), ids, tok.runtime.instances_created, float(image.mean())))
    except BaseException as e:  # report instead of dying silently
        queue.put(repr(e))


def test_fork_after_use(gpt2_json):
    tok = Tokenizer.from_file(gpt2_json)
    pre = ImagePreprocessor.efficientnet_lite0()
    expected = tok.encode_batch(TEXTS).ids
    image_mean = float(pre(np.full((50, 60, 3), 128, np.uint8)).mean())
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_child, args=(tok, pre, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for r in results:
        assert not isinstance(r, str), r
        pid, ids, created, mean = r
        assert pid != os.getpid()
        assert ids == expected
        assert created == 1  # the child built its own instance (counter reset at fork)
        assert abs(mean - image_mean) < 1e-6
    assert tok.encode_batch(TEXTS).ids == expected  # the parent is unaffected
    assert tok.runtime.instances_created == 1


def test_threads_share_one_tokenizer(gpt2_json, corpus):
    tok = Tokenizer.from_file(gpt2_json)
    batches = [corpus[i::8][:200] for i in range(8)]
    expected = [tok.encode_batch(b).ids for b in batches]
    results = [None] * 8
    errors = []

    def work(i):
        try:
            for _ in range(3):
                results[i] = tok.encode_batch(batches[i]).ids
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == expected


def test_import_does_not_pull_heavy_packages():
    # numpy too: only the image and numpy-batch paths import it, lazily.
    code = ("import sys, aigc.wasm; "
            "print(','.join(m for m in ('tokenizers', 'transformers', 'PIL', 'torch', 'numpy') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == ""
