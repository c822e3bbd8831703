"""LoopKit's built-in plugins (diagnosers, renderers, verifiers), imported as `loopkit_plugins`."""
