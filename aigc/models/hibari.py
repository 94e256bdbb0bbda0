"""hibari-heart: the English text-to-speech voice shipped in `hibari-tts` (Apache-2.0 code and weights).

The wheel carries one voice, "heart" (American English, female; distilled from
Kokoro-82M's af_heart): a 7.9 MB int8 ONNX model that turns phoneme ids into
five spectral parts per 12.5 ms frame, which the package's numpy DSP turns into
24 kHz audio. Its other voices download from a model hub on first use, so only
this one is stored. The text front end (normalisation, lexicons, a small ONNX
model for unknown words) stays in the installed package: the function imports
it, and the manifest records the version it was built with.

The build checks the file against the package's own registry entry (sha256)
and synthesises a sentence: audio of a plausible length that is not silence.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
from pathlib import Path
from typing import Any

from . import package_dir, source

VOICE = "heart"
DIST = "hibari-tts"
CHECK_TEXT = "The quick brown fox jumps over the lazy dog."


def build(out: Path) -> dict[str, Any]:
    import numpy as np
    from hibari import Hibari

    assets = package_dir("hibari") / "assets"
    voices = json.loads((assets / "voices.json").read_text())
    voice = voices[VOICE]
    if not voice.get("bundled"):
        raise RuntimeError(f"hibari-tts no longer ships the {VOICE!r} voice in its wheel; pin {DIST}==0.2.1")
    shutil.copyfile(assets / voice["file"], out / "model.onnx")
    digest = hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()
    if digest != voice["sha256"]:
        raise RuntimeError(f"{voice['file']} has sha256 {digest[:12]}…, the package's registry says "
                           f"{voice['sha256'][:12]}…")
    tts = Hibari(voice=VOICE, model=str(out / "model.onnx"), threads=1)
    audio = tts(CHECK_TEXT, seed=0)
    seconds = len(audio) / tts.sample_rate
    loud = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) if len(audio) else 0.0
    if not 1.5 <= seconds <= 5.0 or loud < 0.01:
        raise RuntimeError(f"the check sentence gave {seconds:.2f} s of audio at RMS {loud:.4f}: not speech")
    config = {"voice": VOICE, "voices": [VOICE], "sample_rate": tts.sample_rate, "language": voice["language"],
              "accent": voice["accent"], "gender": voice["gender"], "kokoro_voice": voice["kokoro"],
              "front_end": f"{DIST}=={importlib.metadata.version(DIST)}"}
    (out / "voice.json").write_text(json.dumps(config, indent=2) + "\n")
    return {"task": "text-to-speech", "format": "onnx", "platform": "onnxruntime_onnx",
            "check": {"text": CHECK_TEXT, "seconds": round(seconds, 3), "rms": round(loud, 4)},
            "sources": [source(DIST, [f"hibari/assets/{voice['file']}"])]}
