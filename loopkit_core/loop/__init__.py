"""The loop service: what every front-end calls (see service.py); typed requests and their validation."""

from loopkit_core.loop.errors import LoopError
from loopkit_core.loop.requests import TelemetryRequest
from loopkit_core.loop.service import Handoff, Loop, PacketView

__all__ = ["Handoff", "Loop", "LoopError", "PacketView", "TelemetryRequest"]
