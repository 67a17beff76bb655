# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""What every script in ``benchmarks/`` needs about how it was called: the data root and its command line.

Results files carry the exact command that produced them, and every script finds the shared data the same
way: ``ANOMALIB_PNPT_DATA`` if set, else ``../shared/data`` beside the repository.

Example:
    >>> from pathlib import Path
    >>> data_root("/repo/benchmarks/script.py", environ={}) == Path("/shared/data")
    True
    >>> command_line(["benchmarks/x.py", "--root", "a b"])
    "python benchmarks/x.py --root 'a b'"
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path


def data_root(script_file: str | Path, environ: Mapping[str, str] | None = None) -> Path:
    """The data root for a script under ``benchmarks/``.

    Args:
        script_file: The script's ``__file__``.
        environ: Environment to read ``ANOMALIB_PNPT_DATA`` from (default: ``os.environ``).

    Returns:
        ``ANOMALIB_PNPT_DATA`` if set, else ``<repository>/../shared/data``.
    """
    environ = os.environ if environ is None else environ
    return Path(environ.get("ANOMALIB_PNPT_DATA", Path(script_file).resolve().parents[2] / "shared" / "data"))


def command_line(argv: Sequence[str] | None = None) -> str:
    """The shell command that ran this script (``python`` + the quoted ``argv``), as written into results files.

    Args:
        argv: Arguments to render (default: ``sys.argv``).

    Returns:
        The command, ready to paste into a shell.
    """
    return "python " + " ".join(shlex.quote(a) for a in (sys.argv if argv is None else argv))


def write_results(folder: Path, title: str, note: str, table: str) -> None:
    """Write ``folder/results.md`` (title, the command that ran with ``note``, the table) and print it.

    Args:
        folder: The results folder.
        title: The heading.
        note: What a reader needs beside the command (machine, data, how to read the table).
        table: The table, as markdown.
    """
    text = "\n".join([f"# {title}", "", f"Command: `{command_line()}`. {note}", "", table]) + "\n"
    (folder / "results.md").write_text(text)
    print(text)
