"""Server VAD from the energy of the audio: speech starts when a 10 ms frame is louder than
the threshold, and stops after ``silence_duration_ms`` of frames below it.

Pure: samples in, events out, with times in milliseconds of all audio written in the session
(what ``audio_start_ms`` / ``audio_end_ms`` count).
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass

FRAME_MS = 10


@dataclass(frozen=True, slots=True)
class VadSettings:
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500

    @property
    def threshold_dbfs(self) -> float:
        # 0.0 -> -60 dBFS (hears breathing), 0.5 -> -35 dBFS, 1.0 -> -10 dBFS (needs shouting).
        return -60.0 + 50.0 * min(1.0, max(0.0, self.threshold))


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    audio_start_ms: int


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    audio_end_ms: int


VadEvent = SpeechStarted | SpeechStopped


class EnergyVad:
    def __init__(self, settings: VadSettings, rate: int, start_ms: float = 0.0) -> None:
        self.settings = settings
        self._frame = max(1, rate * FRAME_MS // 1000)
        self._pending = array("h")
        self._ms = start_ms  # session audio time at the start of the next frame
        self._speaking = False
        self._silence_ms = 0
        # Mean square of a full-scale-relative threshold, compared without a sqrt per frame.
        self._threshold_ms2 = (32768.0 * 10 ** (settings.threshold_dbfs / 20)) ** 2

    @property
    def speaking(self) -> bool:
        return self._speaking

    def reset(self, at_ms: float) -> None:
        """Forget partial speech (the buffer was cleared or committed by hand)."""
        self._pending = array("h")
        self._ms, self._speaking, self._silence_ms = at_ms, False, 0

    def feed(self, samples: array[int]) -> list[VadEvent]:
        pending = self._pending
        pending.extend(samples)
        events: list[VadEvent] = []
        frame = self._frame
        whole = len(pending) - len(pending) % frame
        for start in range(0, whole, frame):
            # Every other sample is plenty for an energy estimate and halves the cost.
            chunk = pending[start : start + frame : 2]
            loud = sum(s * s for s in chunk) / len(chunk) > self._threshold_ms2
            self._step(loud, events)
        del pending[:whole]
        return events

    def _step(self, loud: bool, events: list[VadEvent]) -> None:
        frame_start = self._ms
        self._ms += FRAME_MS
        if not self._speaking:
            if loud:
                self._speaking, self._silence_ms = True, 0
                start = max(0.0, frame_start - self.settings.prefix_padding_ms)
                events.append(SpeechStarted(math.floor(start)))
            return
        self._silence_ms = 0 if loud else self._silence_ms + FRAME_MS
        if self._silence_ms >= self.settings.silence_duration_ms:
            self._speaking = False
            events.append(SpeechStopped(math.floor(self._ms)))
