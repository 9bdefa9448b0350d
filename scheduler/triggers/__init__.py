"""Triggers (issue 11): what starts a job's runs without a person. One module per kind
(ARCHITECTURE.md "The tree"): :mod:`scheduler.triggers.schedule` (cron, interval and one-off
schedules; models in :mod:`scheduler.triggers.models`) and :mod:`scheduler.triggers.watch` (file
watches; models in :mod:`scheduler.triggers.watch_models`), imported by :mod:`scheduler.models`
(app label ``scheduler``). Each registers its automation sections in ``SchedulerConfig.ready()``."""
