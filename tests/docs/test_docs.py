"""Every code block in docs/ runs, so the documentation cannot drift from the code.

The blocks of one page run in order in one fresh folder: ```python blocks in one
shared namespace (in this process), ```bash blocks with bash -e (the repository's
models/ linked in, gradflow importable), so a page can build on its earlier
blocks. A python block whose first line is ``# file: NAME.py`` is that file's
content: it is saved in the folder (later blocks import or run it), not executed.
A shell block that cannot run here (a GPU, several machines) is preceded
by ``<!-- not-run: the reason -->``; a ```text block is output or a picture, not
code. Any other block kind fails the test, so nothing slips through unrun.
"""
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
DOCS = sorted((REPO / "docs").glob("*.md"))
FILE = re.compile(r"# file: ([\w./-]+\.py)\n")
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)
NOT_RUN = re.compile(r"<!--\s*not-run:(.*?)-->\s*$", re.S)
RUNNABLE = ("python", "bash")
NOT_CODE = ("text",)
# mpirun in a container (often root) on one machine: shared memory only, no network probing
MPI_ON_ONE_MACHINE = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OMPI_MCA_btl": "self,sm",
                      "OMPI_MCA_pml": "ob1", "PRTE_MCA_rmaps_default_mapping_policy": ":oversubscribe",
                      "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def blocks(page):
    """[(language, code, not_run_reason or None, line)] of a markdown page."""
    text = page.read_text()
    found = []
    for match in FENCE.finditer(text):
        before = text[:match.start()]
        marker = NOT_RUN.search(before[-300:])
        reason = marker.group(1).strip() if marker else None
        found.append((match.group(1).strip(), match.group(2), reason, before.count("\n") + 1))
    return found


def test_docs_exist_and_every_block_is_known():
    names = {page.name for page in DOCS}
    assert {"tutorial.md", "design.md", "adding_a_kernel.md"} <= names, names
    for page in DOCS:
        page_blocks = blocks(page)
        assert any(lang == "python" for lang, *_ in page_blocks), f"{page.name} has no python example"
        for lang, _, reason, line in page_blocks:
            assert lang in RUNNABLE + NOT_CODE, f"{page.name}:{line}: block kind {lang!r} (use python, bash or text)"
            if reason is not None:
                assert lang == "bash" and len(reason) > 10, \
                    f"{page.name}:{line}: only shell blocks may be marked not-run, with a reason"


def _links(path):
    prose = FENCE.sub("", path.read_text())        # brackets inside code are not links
    return [target for target in LINK.findall(prose) if "://" not in target
            and not target.startswith(("#", "mailto:"))]


@pytest.mark.parametrize("page", [REPO / "README.md", *DOCS], ids=lambda p: p.name)
def test_links_point_into_the_repository(page):
    for target in _links(page):
        resolved = (page.parent / target.split("#")[0]).resolve()
        assert resolved.is_relative_to(REPO), f"{page.name} links outside the repository: {target}"
        assert resolved.exists(), f"{page.name} links to a missing file: {target}"
    text = page.read_text()
    assert "../shared" not in text and "DESIGN.md" not in text


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_code_blocks_run(page, tmp_path, monkeypatch):
    (tmp_path / "models").symlink_to(REPO / "models")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               GRADFLOW_DEVICE=os.environ.get("GRADFLOW_DEVICE", "cpu"), PYTHON=sys.executable)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")   # `python` is this one
    env.update(MPI_ON_ONE_MACHINE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.syspath_prepend(str(tmp_path))     # the page's own files import as from `python` started here
    namespace = {"__name__": f"docs.{page.stem}"}
    for lang, code, reason, line in blocks(page):
        where = f"{page.name}:{line}"
        saved_as = FILE.match(code) if lang == "python" else None
        if saved_as:
            compile(code, where, "exec")                # a syntax error fails here, at its line in the page
            (tmp_path / saved_as.group(1)).write_text(code)
        elif lang == "python":
            try:
                exec(compile(code, where, "exec"), namespace)
            except Exception as exc:
                raise AssertionError(f"{where}: the python block raised {type(exc).__name__}: {exc}") from exc
        elif lang == "bash" and reason is None:
            if "mpirun" in code and shutil.which("mpirun", path=env["PATH"]) is None:
                pytest.skip(f"{where} needs mpirun: pip install -e '.[distributed]'")
            result = subprocess.run(["bash", "-e", "-c", code], cwd=tmp_path, env=env, capture_output=True,
                                    text=True, timeout=300)
            assert result.returncode == 0, f"{where}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
