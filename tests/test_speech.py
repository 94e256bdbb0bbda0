"""speech as a real gunicorn process, driven by the official openai client: speech you can measure,
streamed sentence by sentence, and a 400 naming the field for every bad request."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from conftest import running

FOX = "The quick brown fox jumps over the lazy dog."
FIVE = ("The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore. "
        "It was a bright cold day in April, and the clocks were striking thirteen. Call me Ishmael. "
        "All happy families are alike; each unhappy family is unhappy in its own way.")


@pytest.fixture(scope="module")
def speech(model_store, stack_file, tmp_path_factory):
    with running(stack_file.functions["speech"], tmp_path_factory.mktemp("speech")) as url:
        yield url


def client(url):
    import openai

    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def samples_of_wav(data: bytes) -> np.ndarray:
    assert data[:4] == b"RIFF" and data[8:16] == b"WAVEfmt " and data[36:40] == b"data"
    assert int.from_bytes(data[24:28], "little") == 24000 and int.from_bytes(data[34:36], "little") == 16
    return np.frombuffer(data[44:], "<i2").astype(np.float32) / 32767


def test_the_openai_client_gets_a_few_seconds_of_speech(speech):
    data = client(speech).audio.speech.create(model="hibari-heart", voice="heart", input=FOX,
                                              response_format="wav").content
    samples = samples_of_wav(data)
    assert 1.5 <= len(samples) / 24000 <= 5.0
    frames = samples[: len(samples) // 240 * 240].reshape(-1, 240)  # 10 ms frames
    assert (np.sqrt((frames ** 2).mean(axis=1)) > 0.01).mean() > 0.5, "mostly silence"


def test_mp3_is_the_default_format_as_in_openais_api(speech):
    resp = requests.post(speech + "/v1/audio/speech", json={"model": "hibari-heart", "voice": "heart", "input": FOX},
                         timeout=60)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "audio/mpeg"
    assert resp.content[:3] == b"ID3" or (resp.content[0] == 0xFF and resp.content[1] & 0xE0 == 0xE0)


def test_audio_is_sent_sentence_by_sentence(speech):
    """Each sentence leaves as its own HTTP chunk as soon as it is made, not the whole text at the end."""
    with client(speech).audio.speech.with_streaming_response.create(
            model="hibari-heart", voice="heart", input=FIVE, response_format="pcm") as resp:
        assert resp.headers.get("transfer-encoding") == "chunked" and "content-length" not in resp.headers
        assert resp.headers["x-sentences"] == "5"
        streamed = b"".join(resp.iter_bytes())
    assert len(streamed) / 2 / 24000 > 8  # five sentences: well over eight seconds of speech
    body = {"model": "hibari-heart", "voice": "heart", "input": FIVE, "response_format": "pcm", "seed": 3}
    with requests.post(speech + "/v1/audio/speech", json=body, stream=True, timeout=60) as raw:
        pieces = [len(c) for c in raw.raw.read_chunked(decode_content=False) if c]  # one per HTTP chunk
    assert len(pieces) == 5 and all(p % 2 == 0 and p > 24000 for p in pieces), pieces


def test_a_seed_repeats_the_audio_and_speed_changes_its_length(speech):
    body = {"model": "hibari-heart", "voice": "heart", "input": FOX, "response_format": "pcm", "seed": 7}
    first = requests.post(speech + "/v1/audio/speech", json=body, timeout=60).content
    assert requests.post(speech + "/v1/audio/speech", json=body, timeout=60).content == first
    fast = requests.post(speech + "/v1/audio/speech", json=dict(body, speed=2.0), timeout=60).content
    assert len(fast) < 0.75 * len(first)


@pytest.mark.parametrize("body, field", [
    ({"input": ""}, "input"), ({"input": ["a"]}, "input"), ({"input": "x " * 2100}, "input"),
    ({"input": FOX, "voice": "alloy"}, "voice"), ({"input": FOX, "model": "tts-1"}, "model"),
    ({"input": FOX, "response_format": "flac"}, "response_format"), ({"input": FOX, "speed": 0.1}, "speed"),
    ({"input": FOX, "speed": "fast"}, "speed"), ({"input": FOX, "seed": -1}, "seed"),
    ({"input": " \n\t "}, "input")])
def test_bad_requests_are_400s_naming_the_field_and_the_instance_keeps_serving(speech, body, field):
    import openai

    full = {"model": "hibari-heart", "voice": "heart", **body}
    resp = requests.post(speech + "/v1/audio/speech", json=full, timeout=60)
    assert resp.status_code == 400 and field in resp.json()["error"], resp.text
    known = {k: v for k, v in full.items() if k in ("model", "voice", "input", "response_format", "speed")}
    with pytest.raises(openai.BadRequestError) as raised:
        client(speech).audio.speech.create(**known, extra_body={k: v for k, v in full.items() if k not in known})
    assert field in raised.value.body  # the client keeps our {"error": …} string as the error's body
    assert requests.get(speech + "/_/ready", timeout=10).status_code == 200


def test_plain_text_at_the_root_is_spoken_as_wav(speech):
    """What `faas-cli invoke speech` sends."""
    resp = requests.post(speech + "/", data=FOX.encode(), timeout=60)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "audio/wav"
    assert 1.5 <= len(samples_of_wav(resp.content)) / 24000 <= 5.0
