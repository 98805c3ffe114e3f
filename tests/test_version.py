import subprocess
import sys

import notify_tracking


def test_version_from_the_command_line():
    result = subprocess.run(
        [sys.executable, "-m", "notify_tracking", "--version"],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    assert result.stdout.strip() == f"django-notify-tracking {notify_tracking.__version__}"
