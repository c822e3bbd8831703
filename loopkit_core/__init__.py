"""LoopKit: production telemetry in, approval-gated diagnosis packets out."""

__version__ = "0.1.0"
