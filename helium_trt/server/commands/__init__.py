"""Subcommands of `helium-trt`, one module each."""
