"""Local demo harness: a real OpenClaw gateway backed by a canned, OpenAI-compatible stub model.

Stdlib only (no Django, no third-party packages) so that ``make run``, the pytest session fixture and the
benchmarks can all import it before -- or without -- configuring Django.

* :mod:`demo.stub_model` -- the canned model server (``python -m demo.stub_model``).
* :mod:`demo.gateway` -- installs Node 24 + openclaw into a cache dir and runs a gateway
  (``python -m demo.gateway run|install|token``).
"""
