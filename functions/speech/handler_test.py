"""speech's own tests, run by the image's test stage (TEST_ENABLED=true) with the baked voice."""


import numpy as np
import pytest

from aigc.runtime import errors, testing
from function import handler

needs_model = testing.needs_model(handler.model.name)


def speak(body: dict) -> tuple[bytes, dict]:
    testing.loaded(handler.model)
    resp = handler.speak({"model": handler.model.name, "voice": "heart", **body})
    return b"".join(resp.response), dict(resp.headers)


def test_models_are_listed_openai_style():
    out = handler.handle(testing.request("/v1/models", method="GET"), None)
    assert [m["id"] for m in out["data"]] == [handler.model.name]


@needs_model
def test_a_sentence_becomes_a_few_seconds_of_speech():
    data, headers = speak({"input": "The quick brown fox jumps over the lazy dog.", "response_format": "wav"})
    assert headers["Content-Type"] == "audio/wav" and data[:4] == b"RIFF"
    samples = np.frombuffer(data[44:], "<i2").astype(np.float32) / 32767
    assert 1.5 <= len(samples) / 24000 <= 5.0
    frames = samples[: len(samples) // 240 * 240].reshape(-1, 240)  # 10 ms frames
    assert (np.sqrt((frames ** 2).mean(axis=1)) > 0.01).mean() > 0.5


@needs_model
def test_mp3_and_pcm_carry_the_same_speech():
    pcm, _ = speak({"input": "Hello there.", "response_format": "pcm", "seed": 1})
    mp3, headers = speak({"input": "Hello there.", "response_format": "mp3", "seed": 1})
    assert headers["Content-Type"] == "audio/mpeg"
    assert mp3[:3] == b"ID3" or (mp3[0] == 0xFF and mp3[1] & 0xE0 == 0xE0)  # an MPEG frame sync
    seconds = len(pcm) / 2 / 24000
    assert 0.3 < seconds < 3 and 0.5 * seconds < len(mp3) * 8 / 64000 < 2 * seconds + 0.2


@needs_model
@pytest.mark.parametrize("body, field", [({"input": ""}, "input"), ({"input": 5}, "input"),
                                         ({"input": "x" * 4097}, "input"), ({"input": "hi", "voice": "alloy"}, "voice"),
                                         ({"input": "hi", "model": "tts-1"}, "model"),
                                         ({"input": "hi", "response_format": "opus"}, "response_format"),
                                         ({"input": "hi", "speed": 9}, "speed"), ({"input": "hi", "speed": "x"}, "speed")])
def test_bad_requests_name_the_field(body, field):
    with pytest.raises(errors.InvalidInput, match=field):
        speak(body)
