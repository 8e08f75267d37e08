"""Every ```python block in README.md and docs/*.md runs as written, so none can rot.

Each block runs alone in a fresh interpreter (nothing shared between blocks), in an empty folder
whose ``data`` is this repository's ``data`` (so ``data/mnist-test`` is found, and what a block
writes stays out of the checkout), on whatever this machine has: blocks pick their backend with
"auto". A block that truly cannot run standalone (a fragment of a source file, a download) is
preceded by ``<!-- no-run: the reason -->``; those are listed as skips with their reason.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
NO_RUN = re.compile(r"<!--\s*no-run:\s*(.*?)\s*-->")
#: at most this many blocks may be exempt; each says why
MAX_NO_RUN = 8  # fragments of longer pages (docs/training.md, docs/distributed.md): keep it small


@dataclass(frozen=True)
class Block:
    file: Path
    line: int  # of the opening fence, 1-based
    code: str
    no_run: str | None  # the reason, for a block marked no-run

    @property
    def name(self) -> str:
        return f"{self.file.relative_to(ROOT)}:{self.line}"


def python_blocks(path: Path) -> list[Block]:
    """The ```python blocks of the Markdown file ``path``, dedented (blocks inside list items
    are indented), each with the no-run reason of the line just before its fence, if any."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        start, language = i, match.group(2)
        i += 1
        while i < len(lines) and not FENCE.match(lines[i]):
            i += 1
        if language == "python":
            before = next((line for line in reversed(lines[:start]) if line.strip()), "")
            marker = NO_RUN.search(before)
            code = textwrap.dedent("\n".join(lines[start + 1 : i]))
            blocks.append(Block(path, start + 1, code, marker.group(1) if marker else None))
        i += 1
    return blocks


BLOCKS = [block for path in DOCS for block in python_blocks(path)]


def test_the_docs_have_python_blocks_and_few_exemptions() -> None:
    assert any(block.file.name == "README.md" and not block.no_run for block in BLOCKS)
    exempt = [block for block in BLOCKS if block.no_run is not None]
    assert len(exempt) <= MAX_NO_RUN, [block.name for block in exempt]
    assert all(block.no_run for block in exempt), "a no-run marker must say why"


def test_the_block_parser_finds_fences_markers_and_indented_blocks(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "text\n```python\nprint(1)\n```\n\n```sh\nls\n```\n"
        "1. item\n\n   <!-- no-run: a fragment -->\n   ```python\n   def f():\n       pass\n   ```\n"
    )
    first, second = python_blocks(page)
    assert (first.line, first.code, first.no_run) == (2, "print(1)", None)
    assert (second.line, second.code, second.no_run) == (12, "def f():\n    pass", "a fragment")


@pytest.mark.parametrize("block", BLOCKS, ids=[block.name for block in BLOCKS])
def test_block_runs_as_written(block: Block, tmp_path: Path) -> None:
    if block.no_run is not None:
        pytest.skip(f"{block.name} not run (marked no-run): {block.no_run}")
    (tmp_path / "data").symlink_to(ROOT / "data", target_is_directory=True)
    script = tmp_path / "block.py"
    script.write_text(block.code + "\n", encoding="utf-8")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MPLBACKEND": "Agg",
        "OPENBLAS_NUM_THREADS": "1",
        "XDG_CACHE_HOME": str(tmp_path / "cache"),  # nothing from a user's cache
    }
    env.pop("AILIB_DATA", None)
    run = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert run.returncode == 0, f"{block.name} failed:\n{run.stdout}\n{run.stderr}"
