"""``python -m notify_tracking --version`` prints the installed version."""

import argparse

from . import __version__


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m notify_tracking")
    parser.add_argument(
        "--version", action="version", version=f"django-notify-tracking {__version__}"
    )
    parser.parse_args(argv)
    parser.print_help()


if __name__ == "__main__":
    main()
