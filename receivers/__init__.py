"""Receivers: translate each wire format (OTLP protobuf, OTLP/JSON, plain records) into Records."""
