# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""An uncaught user-facing error is one line; every other error keeps its traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import sys
from anomalib_pnpt.error_reporting import UserFacingError, report_user_facing_errors
report_user_facing_errors()
raise {error}("pass --model.weights_path")
"""


@pytest.mark.parametrize(("error", "one_line"), [("UserFacingError", True), ("ValueError", False)])
def test_uncaught_error_output(error: str, one_line: bool) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(error=error)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip() and "Warning" not in line]
    if one_line:
        assert lines == ["UserFacingError: pass --model.weights_path"]
    else:
        assert lines[0].startswith("Traceback")
        assert lines[-1] == "ValueError: pass --model.weights_path"
