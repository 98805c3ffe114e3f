#!/usr/bin/env python
"""Django's command-line utility for the demo; run it from anywhere."""

import os
import sys
from pathlib import Path

# Import the demo as the package ``example_project`` from the repository root, never
# its modules as top-level ones from this directory.
sys.path[0] = str(Path(__file__).resolve().parent.parent)


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    from django.core.management import execute_from_command_line

    import example_project.celery_app  # noqa: F401  (commands that notify enqueue through it)

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
