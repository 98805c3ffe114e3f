#!/usr/bin/env python
"""Run the demo task tracker: ``python example_project/run_demo.py`` (or ``make demo``).

Migrates, seeds the demo data, starts a Celery worker and the web server on
http://127.0.0.1:8000 (``DEMO_PORT`` to change it), and stops both on Ctrl-C.
``--smoke`` runs the whole thing headless in a throwaway directory, checks that a
posted comment is sent to every follower, prints one line and exits (0: it works).
See docs/demo.md.
"""

import argparse
import signal
import sys
from pathlib import Path

# Import the demo as the package ``example_project`` from the repository root, never
# its modules as top-level ones from this directory.
sys.path[0] = str(Path(__file__).resolve().parent.parent)


def stop_on_signal(signum, frame):
    # Ctrl-C, SIGTERM or a closed terminal: stop the worker and the server. Set for
    # SIGINT too, which a shell leaves ignored in a program it starts in the background.
    raise KeyboardInterrupt


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="run headless in a temporary directory, check a comment gets sent, and exit",
    )
    args = parser.parse_args(argv)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop_on_signal)

    if args.smoke:
        from example_project.smoke import run_smoke

        return run_smoke()
    from example_project.launcher import run_demo

    return run_demo()


if __name__ == "__main__":
    sys.exit(main())
