#!/usr/bin/env python
from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentflow.settings")
    from django.core.management import execute_from_command_line

    from agentflow.lib.env import load_settings_or_exit

    load_settings_or_exit()  # a bad setting is one line on stderr and exit code 2, not a traceback
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
