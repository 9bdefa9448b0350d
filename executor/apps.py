from __future__ import annotations

from django.apps import AppConfig


class ExecutorConfig(AppConfig):
    name = "executor"
    verbose_name = "Command executor"

    def ready(self) -> None:
        from . import hooks

        hooks.register()
