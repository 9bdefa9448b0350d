"""Experiment only, never the app: agentflow.asgi:application with the fix proposed for
dashboard/consumers.py applied in this process: DashboardConsumer skips channels' per-message
``aclose_old_connections()`` (a thread hop through asgiref's single shared executor thread) for
forwarded group events, which never touch the database.

    python -m daphne bench._asgi_fix_dispatch:application
"""

from agentflow.asgi import application  # noqa: F401 - what daphne serves
from dashboard import consumers


async def dispatch(self, message):
    if message.get("kind") in consumers.FORWARDED:
        await self.forward(message)
    else:
        await super(consumers.DashboardConsumer, self).dispatch(message)


consumers.DashboardConsumer.dispatch = dispatch
