"""``manage.py migrate ARGS…`` with a count of the statements that rewrite batch runs, as JSON.

Run from the repository root. The data migration of scheduler 0002 must touch ``BatchRun`` once
per gateway, not once per run: the previous release never deleted runs, so a real table holds
months of them and a per-run loop turns the upgrade into hours. Counting the UPDATEs catches
that on a small database, where the time alone would not.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main() -> None:
    sys.path[0] = str(Path.cwd())  # the repository root, not this file's folder
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentflow.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    updates = 0

    def count(execute, sql, params, many, context):
        nonlocal updates
        if sql.lstrip().upper().startswith("UPDATE") and "scheduler_batchrun" in sql:
            updates += 1
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        call_command("migrate", *sys.argv[1:], interactive=False, verbosity=0)
    print(json.dumps({"batchrun_updates": updates}))


if __name__ == "__main__":
    main()
