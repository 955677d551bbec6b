"""Every Python example of README.md runs as written.

The ```python blocks of one section (a ``##`` heading with its subsections) run in order in
one namespace, so a block may use what an earlier block of the section defined, as a reader
going down the section would; each section starts afresh, in an empty working folder. A
block whose first line is ``# not run by the tests: <why>`` is compiled (its syntax
checked) but not run; keep those rare. Tracebacks point at README.md's own line numbers.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
NOT_RUN = "# not run by the tests:"

# The topics whose examples issue 12 asked for: each needs at least one block that runs.
DOCUMENTED = ("Training from Python", "Divergence", "Optimizers and schedules", "Data",
              "Saving, checkpoints and resume", "Threads", "NaN and Inf", "Warm-up")


class Block(NamedTuple):
    line: int  # README.md's line number of the block's first line
    code: str
    heading: str  # the innermost heading above it


def sections(text: str) -> list[tuple[str, list[Block]]]:
    """``(section, blocks)`` for every ``#``/``##`` section that holds Python blocks."""
    lines = text.splitlines()
    found: list[tuple[str, list[Block]]] = []
    section = heading = "(before any heading)"
    i = 0
    while i < len(lines):
        fence = re.match(r"(`{3,})\s*(\S*)", lines[i])
        if fence:
            ticks, lang, start = fence.group(1), fence.group(2), i + 1
            i += 1
            while i < len(lines) and lines[i].strip() != ticks:
                i += 1
            if i == len(lines):
                raise ValueError(f"README.md:{start}: code block never closed")
            if lang == "python":
                if not found or found[-1][0] != section:
                    found.append((section, []))
                found[-1][1].append(Block(start + 1, "\n".join(lines[start:i]) + "\n", heading))
        elif title := re.match(r"(#{1,6}) (.+)", lines[i]):
            heading = title.group(2).strip()
            if len(title.group(1)) <= 2:
                section = heading
        i += 1
    return found


SECTIONS = sections(README.read_text(encoding="utf-8"))


def test_the_parser_groups_blocks_by_section_and_skips_other_languages():
    text = ("# A\n```python\nx = 1\n```\n```bash\nexit 1\n```\n## B\n```python\n# a comment, not a heading\n"
            "y = 2\n```\n### C\n```python\nz = 3\n```\n")
    assert sections(text) == [("A", [Block(3, "x = 1\n", "A")]),
                              ("B", [Block(10, "# a comment, not a heading\ny = 2\n", "B"),
                                     Block(15, "z = 3\n", "C")])]


def test_every_documented_topic_has_an_example_that_runs():
    runnable = {b.heading for _, blocks in SECTIONS for b in blocks if not b.code.startswith(NOT_RUN)}
    missing = [h for h in DOCUMENTED if h not in runnable]
    assert not missing, f"README.md has no runnable ```python example under: {', '.join(missing)}"


def test_examples_left_unrun_are_rare_and_say_why():
    unrun = [(b.line, b.code.splitlines()[0]) for _, blocks in SECTIONS for b in blocks
             if b.code.startswith(NOT_RUN)]
    assert all(len(first) > len(NOT_RUN) + 5 for _, first in unrun), unrun
    assert len(unrun) <= 3, f"too many README examples are not run by the tests: {unrun}"


@pytest.mark.parametrize("section,blocks", SECTIONS, ids=[h for h, _ in SECTIONS])
def test_readme_examples_run(section, blocks, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples write files (model.save, checkpoints)
    monkeypatch.setenv("NUMBACNN_DATA", str(tmp_path / "data"))  # nothing lands in the user's cache
    # A section showing an optional peer (PyTorch, onnxruntime) needs it installed, as its reader would.
    for module in ("torch", "onnx", "onnxruntime", "mpi4py"):
        if any(re.search(rf"^\s*(import|from) {module}\b", b.code, re.M) for b in blocks):
            pytest.importorskip(module)
    namespace: dict = {"__name__": "__readme__"}
    for block in blocks:
        # Padded so that a traceback names README.md's own line.
        compiled = compile("\n" * (block.line - 1) + block.code, str(README), "exec")
        if not block.code.startswith(NOT_RUN):
            exec(compiled, namespace)
