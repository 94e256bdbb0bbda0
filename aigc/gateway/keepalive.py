"""Adaptive keep-alive: windows learned from a function's idle times, after the hybrid histogram policy of
Shahrad et al., "Serverless in the Wild" (USENIX ATC '20).

For each function we keep a histogram of idle times (from one call's end to the next call's start) in
1-minute bins over 4 hours (the bin is AIGC_KEEPALIVE_BIN: a function called every few seconds learns
nothing from minutes, and a time-compressed replay of a trace scales the bin with it; the range,
the 1-bin floor of the windows and the 30-bin cap scale with the bin). From it come two windows, measured from the end of a call:
- pre-warm: the 5th percentile of idle times, less 10% (0 when that is under a minute): replicas may
  go away right after a call, and one is loaded again when the pre-warm window ends;
- keep-alive: from there to the 99th percentile, plus 10%: how long a loaded replica waits for the next call.
A periodic function called every 15 minutes is then loaded only around the 15-minute mark instead of
being kept for a fixed 10 or 20 minutes (or going cold when the timeout is shorter than its period).

While the histogram is thin (fewer than MIN_SAMPLES idle times), mostly out of its range (idle times
beyond 4 hours), or too spread to predict (a keep-alive window over 30 minutes: Poisson-like or
bursty gaps, where no window beats a timeout), the windows fall back to the function's fixed
timeout: (0, fixed). The paper falls back to a fixed window too, and to ARIMA for idle times beyond
its range; we do not forecast those. Every structure
here is bounded (one array of bins and three counters per function).
"""

from __future__ import annotations

from dataclasses import dataclass

BIN = 60.0            # seconds per bin, by default
BINS = 240            # 4 hours of range
MIN_SAMPLES = 10      # idle times before the histogram is trusted
HEAD, TAIL, MARGIN = 0.05, 0.99, 0.10
MAX_OUT_OF_RANGE = 0.5  # share of idle times beyond the range above which the histogram is not used
MAX_KEEPALIVE_BINS = 30  # a learned keep-alive longer than this means the idle times are too spread to predict
LABEL = "com.aigc.keepalive"
POLICIES = ("fixed", "adaptive")


@dataclass(frozen=True)
class Windows:
    prewarm: float    # seconds after a call ends before a replica is (re)loaded; 0: it stays
    keepalive: float  # seconds a loaded replica then waits for a call
    learned: bool     # False: the fixed fallback

    @property
    def unload_after(self) -> float:
        """Seconds after the last call's end when the last replica goes."""
        return self.prewarm + self.keepalive


class IdleHistogram:
    def __init__(self, bin_seconds: float = BIN):
        self.bin = bin_seconds
        self.bins = [0] * BINS
        self.samples = 0
        self.out_of_range = 0

    def add(self, idle: float) -> None:
        idle = max(0.0, idle)
        self.samples += 1
        index = int(idle // self.bin)
        if index >= BINS:
            self.out_of_range += 1
        else:
            self.bins[index] += 1

    def _percentile(self, q: float) -> tuple[int, bool]:
        """The bin holding the q-quantile of the in-range idle times, and whether there is one."""
        inside = self.samples - self.out_of_range
        if inside <= 0:
            return 0, False
        wanted, seen = q * inside, 0
        for index, count in enumerate(self.bins):
            seen += count
            if seen >= wanted and count:
                return index, True
        return BINS - 1, True

    def windows(self, fixed: float) -> Windows:
        if self.samples < MIN_SAMPLES or self.out_of_range > MAX_OUT_OF_RANGE * self.samples:
            return Windows(0.0, fixed, False)
        head, _ = self._percentile(HEAD)
        tail, _ = self._percentile(TAIL)
        prewarm = head * self.bin * (1 - MARGIN)
        if prewarm < self.bin:
            prewarm = 0.0
        keepalive = max(self.bin, (tail + 1) * self.bin * (1 + MARGIN) - prewarm)
        if keepalive > MAX_KEEPALIVE_BINS * self.bin:  # memoryless or mixed gaps: no window pays; keep the fixed timeout
            return Windows(0.0, fixed, False)
        return Windows(prewarm, keepalive, True)


def policy_of(labels: dict[str, str]) -> str:
    value = labels.get(LABEL, "fixed")
    if value not in POLICIES:
        raise ValueError(f"{LABEL}={value!r}: use one of {', '.join(POLICIES)}")
    return value
