"""speech: English text-to-speech with OpenAI's audio API (the hibari-heart voice, 24 kHz).

    POST /v1/audio/speech   {"model", "input", "voice", "response_format", "speed"} -> audio, streamed
    POST /                  the same body, or plain text (spoken with the defaults, as WAV)
    GET  /v1/models         the model
    POST /v2/models/<model>/infer   OIP: `text` (BYTES, 1) -> `audio` (FP32, samples at 24 kHz)

The text is split into sentences (long ones at clause punctuation) and turned into phonemes up
front, so a text that cannot be spoken is a 400 before any audio; then each sentence is
synthesised and sent as soon as it is ready (chunked transfer): the first audio arrives while the
rest is still being made. `response_format`: mp3 (OpenAI's default; LAME, 64 kbit/s), wav (the
header's sizes say "until the end", as a stream must), or pcm (16-bit little-endian mono). A stream
stops at exec_timeout, and when the client goes away. `seed` (an extension) makes the voice's
noise component repeatable.

Voice model: hibari-tts (Apache-2.0 code and weights), distilled from Kokoro-82M.
"""

import json
import logging
import os
import time

import numpy as np
from flask import Response

from aigc.runtime import Model, TensorSpec, audio, errors, openai, store
from aigc.runtime.config import Settings

EXEC_TIMEOUT = Settings.from_env().exec_timeout
log = logging.getLogger("aigc.runtime")


class Speech(Model):
    platform = "onnxruntime_onnx"
    # hibari's sessions are single-threaded (its model runs ~100x real time on one core): nothing a fork loses
    fork_safe = True
    inputs = (TensorSpec("text", "BYTES", (1,)),)
    outputs = (TensorSpec("audio", "FP32", (-1,)),)

    def load(self):
        from hibari import Hibari

        stored = store.open_model(self.name)
        self.config = json.loads(stored.file("voice.json").read_text())
        self.tts = Hibari(voice=self.config["voice"], model=str(stored.file("model.onnx")), threads=1)
        self.sample_rate = self.tts.sample_rate
        self.tts("Ready.", seed=0)  # the front end's lexicons load on first use: here, not in a request

    @property
    def voices(self) -> list[str]:
        return list(self.config["voices"])

    def phonemes(self, text: str) -> list[str]:
        chunks = self.tts.phonemize(text)
        if not chunks:
            raise errors.InvalidInput("'input' has nothing to speak (no words after normalisation)")
        return chunks

    def synthesize(self, chunks: list[str], speed: float, seed: int | None, deadline: float):
        """One float32 array per chunk; stops between chunks once `deadline` has passed."""
        rng = np.random.default_rng(seed)
        for i, chunk in enumerate(chunks):
            if time.monotonic() > deadline:
                log.warning("speech stopped at exec_timeout=%gs after %d of %d sentences", EXEC_TIMEOUT, i,
                            len(chunks))
                return
            yield self.tts.from_ids(self.tts.ids(chunk), speed, rng)

    def predict(self, inputs, parameters):
        texts = [t.decode("utf-8", "replace") for t in inputs["text"].reshape(-1)]
        if len(texts) != 1:
            raise errors.InvalidInput(f"input 'text' holds {len(texts)} strings; send exactly one")
        request = openai.parse_speech({"model": self.name, "input": texts[0], "voice": self.config["voice"],
                                       "response_format": "pcm", **_parameters(parameters)},
                                      [self.name], self.voices, audio.FORMATS)
        parts = list(self.synthesize(self.phonemes(request.input), request.speed, _seed(parameters),
                                     time.monotonic() + EXEC_TIMEOUT))
        return {"audio": np.concatenate(parts).astype(np.float32)}


def _parameters(parameters: dict) -> dict:
    return {k: parameters[k] for k in ("speed",) if k in parameters}


def _seed(body: dict) -> int | None:
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63):
        raise errors.InvalidInput(f"'seed' must be a whole number from 0 to 2^63-1, got {seed!r}")
    return seed


model = Speech(os.environ.get("MODEL_NAME", "hibari-heart"))


def handle(event, context):
    route = (event.method, event.path.rstrip("/") or "/")
    if route == ("GET", "/v1/models"):
        return openai.model_list([model.name])
    if route == ("POST", "/v1/audio/speech"):
        return speak(event.json())
    if route == ("POST", "/"):
        try:
            body = json.loads(event.body)
        except ValueError:
            body = None
        if not isinstance(body, dict):  # `faas-cli invoke speech` sends the text itself
            body = {"input": event.body.decode("utf-8", "replace"), "response_format": "wav"}
        return speak({"model": model.name, "voice": model.config["voice"], **body})
    raise errors.ModelNotFound(f"no route {event.method} {event.path}; use POST /v1/audio/speech, POST / "
                               "or GET /v1/models")


def speak(body) -> Response:
    request = openai.parse_speech(body, [model.name], model.voices, audio.FORMATS)
    seed = _seed(body)
    chunks = model.phonemes(request.input)  # a text that cannot be spoken fails here, before the 200
    encoder = audio.Encoder(request.response_format, model.sample_rate)
    pieces = model.synthesize(chunks, request.speed, seed, time.monotonic() + EXEC_TIMEOUT)

    def stream():
        try:  # closing this generator (client gone) closes `pieces`: no more sentences are made
            yield encoder.start()
            for wav in pieces:
                yield encoder.piece(wav)
            yield encoder.end()
        finally:
            pieces.close()

    return Response(stream(), mimetype=encoder.content_type,
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                             "X-Sample-Rate": str(model.sample_rate), "X-Sentences": str(len(chunks))})
