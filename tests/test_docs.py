"""Every Python block of README.md and docs/*.md runs standalone, as written, and so does every short shell block.

The blocks assume the files `bash scripts/demo.sh` leaves in out/ (a checkpoint run folder, a digits model and
its samples). The fixture makes them with the demo script itself, only shorter (a few training steps), in a
scratch copy of the repository's layout. Each block runs there as its own process, in page order: a Python
block that silently relies on names from an earlier one fails, while a shell block may use a file an earlier
block of its page wrote, as a reader following the page would.

A shell block is skipped only when the line before its fence is `<!-- not run by the tests: REASON -->`; the
reason says why (a long training run, a GPU, a browser).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)
NOT_RUN = "<!-- not run by the tests:"
SHELL = {"bash", "sh", "shell", "console"}


def _blocks(doc):
    """(line, lang, body) of every block of `doc` that the tests run, in order."""
    out = []
    text = doc.read_text()
    for match in FENCE.finditer(text):
        lang, body = match.group(1), match.group(2)
        before = text[: match.start()].rstrip().splitlines()[-1:] or [""]
        skipped = before[0].strip().startswith(NOT_RUN)
        line = text.count("\n", 0, match.start()) + 1
        if lang == "python" or (lang in SHELL and not skipped):
            out.append((line, lang, body))
    return out


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    """A scratch folder laid out like the repository, with out/ made by a short run of the demo."""
    work = tmp_path_factory.mktemp("docs")
    for entry in ROOT.iterdir():
        if entry.name not in {"out", "runs", ".git", ".venv-numpy"}:
            (work / entry.name).symlink_to(entry)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "demo.py"),
            "--out-dir",
            str(work / "out"),
            "--train-steps",
            "20",
            "--samples",
            "50",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return work


@pytest.mark.slow
@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_block_runs_as_written(doc, workdir):
    """The page's blocks run in order in one folder (a shell block may use a file an earlier one wrote)."""
    bindir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
        "OMP_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
    }
    failures = []
    for line, lang, body in _blocks(doc):
        cmd = [sys.executable, "-c", body] if lang == "python" else ["bash", "-euo", "pipefail", "-c", body]
        done = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=env, timeout=300)
        if done.returncode != 0 or "Traceback" in done.stderr:
            failures.append(
                f"{doc.name}:{line}: exit {done.returncode}\n{body}\n--- stdout\n{done.stdout[-2000:]}\n"
                f"--- stderr\n{done.stderr[-2000:]}"
            )
    assert not failures, "\n\n".join(failures)


def test_every_doc_page_is_reachable_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    missing = [p.name for p in DOCS[1:] if f"docs/{p.name}" not in readme]
    assert not missing, f"docs pages not linked from README.md: {missing}"


def test_docs_speak_only_of_the_project():
    pattern = re.compile(r"/work/|\.\./shared|DESIGN\.md|STYLE\.md|FACTS\.md|CONTRACTS\.md")
    offenders = []
    for path in [*DOCS, *ROOT.glob("*.md")]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
