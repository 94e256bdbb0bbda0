"""Audio encodings for streamed speech, as OpenAI's `response_format` names them: mp3, wav, pcm.

Audio goes out as it is made, so no format may need the total length first:
- `pcm`: 16-bit signed little-endian mono samples, nothing else (OpenAI's pcm is the same at 24 kHz);
- `wav`: a RIFF header, then the same samples; the header's two sizes are 0xFFFFFFFF ("until the end"),
  as streaming servers write them, since the length is unknown when the header leaves;
- `mp3`: MPEG-1 Layer III from LAME (the `lameenc` wheel), 64 kbit/s mono, frames flushed at the end.
"""

from __future__ import annotations

import struct

import numpy as np

FORMATS = ("mp3", "wav", "pcm")
CONTENT_TYPES = {"mp3": "audio/mpeg", "wav": "audio/wav", "pcm": "audio/pcm"}
MP3_KBPS = 64
_STREAMING_SIZE = 0xFFFFFFFF


def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def wav_header(sample_rate: int, data_bytes: int | None = None) -> bytes:
    """A 44-byte RIFF/WAVE header for 16-bit mono; `data_bytes` None writes the streaming sizes."""
    data = _STREAMING_SIZE if data_bytes is None else data_bytes
    riff = _STREAMING_SIZE if data_bytes is None else 36 + data_bytes
    return (b"RIFF" + struct.pack("<I", riff) + b"WAVEfmt " +
            struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16) + b"data" + struct.pack("<I", data))


class Encoder:
    """Bytes for the start, each piece of audio (float32 in -1..1), and the end of one response."""

    def __init__(self, fmt: str, sample_rate: int):
        if fmt not in FORMATS:
            raise ValueError(f"unknown audio format {fmt!r}")
        self.format, self.sample_rate = fmt, sample_rate
        self._mp3 = None
        if fmt == "mp3":
            import lameenc

            self._mp3 = lameenc.Encoder()
            self._mp3.set_bit_rate(MP3_KBPS)
            self._mp3.set_in_sample_rate(sample_rate)
            self._mp3.set_channels(1)
            self._mp3.set_quality(5)  # LAME's default trade-off; 2 is slower for little gain at 64 kbit/s

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]

    def start(self) -> bytes:
        return wav_header(self.sample_rate) if self.format == "wav" else b""

    def piece(self, audio: np.ndarray) -> bytes:
        samples = pcm16(audio)
        return bytes(self._mp3.encode(samples)) if self._mp3 else samples

    def end(self) -> bytes:
        return bytes(self._mp3.flush()) if self._mp3 else b""
