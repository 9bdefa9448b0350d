"""Settings of the bench's bare-view web process: AgentFlow's own, with a URL conf holding only
the bare 202 view (``bench._bare_webhook_urls``)."""

from __future__ import annotations

from agentflow import settings as _product

globals().update({name: value for name, value in vars(_product).items() if name.isupper()})
ROOT_URLCONF = "bench._bare_webhook_urls"
