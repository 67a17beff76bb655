# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Benchmark scripts find the data and record their command the same way."""

from __future__ import annotations

import shlex
from pathlib import Path

from invocation import command_line, data_root


def test_data_root_prefers_the_environment_then_the_shared_folder_beside_the_repository(tmp_path: Path) -> None:
    script = tmp_path / "repo" / "benchmarks" / "run.py"
    assert data_root(script, environ={}) == tmp_path / "shared" / "data"
    assert data_root(script, environ={"ANOMALIB_PNPT_DATA": "/data"}) == Path("/data")


def test_command_line_can_be_pasted_back_into_a_shell() -> None:
    argv = ["benchmarks/run.py", "--root", "dir with space", "--models", "A,B"]
    command = command_line(argv)
    assert command.startswith("python ")
    assert shlex.split(command)[1:] == argv
