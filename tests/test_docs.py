"""The documentation is true: every code block of README.md and docs/*.md runs, and every link resolves.

Conventions for whoever writes the docs:

- A ```python block runs, in a fresh namespace. Its working directory is a temporary folder, one
  per page (the blocks of a page run in order in it, so a later block may read a file an earlier
  one wrote), holding ``datasets/`` (the embedded datasets) and ``runs/raccoon/model``: the model
  the README's first set-up command saves, made once here by running that command's
  ``detect-automl fit`` part.
- A ```bash block runs when every command in it is ``detect-automl ...``: each goes through
  :func:`detect_automl.cli.main` in this process and must exit with 0.
- A block that cannot run here is marked on the line right before its opening fence with
  ``<!-- not run: REASON -->``; the reason says why, and names the test that covers it instead
  where there is one. Blocks in other languages (``text``, ``json``) are not run.

Cost (the suite is long already): this file takes well under a minute because ``fit`` is wrapped
while the blocks run. Whatever a block asks, the wrapped fit trains one configuration
(``num_trials=1``) on the first 16 training and 8 validation images, for
``time_limit=min(given, 6 s)``, from scratch (``pretrained="auto"`` becomes None, so nothing is
downloaded). The docs keep the values a user would write (``time_limit=600``); a block whose call
would start Ray (``search_space``, ``ray_address``, ``resume``) must be marked.
"""

from __future__ import annotations

import functools
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

import detect_automl
import detect_automl.api
from detect_automl.cli import main as cli_main

REPO_ROOT = Path(__file__).resolve().parents[1]
PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
CAP_SECONDS = 6.0
"""The longest ``time_limit`` a documented ``fit`` gets here."""
TRAIN_IMAGES, VAL_IMAGES = 16, 8

PYTHON = {"python", "py"}
SHELL = {"bash", "sh", "shell", "console"}
NOT_CODE = {"text", "json"}
_FENCE = re.compile(r"^(`{3,}|~{3,})\s*([\w+-]*)\s*$")
_MARK = re.compile(r"^<!--\s*not run:(.*?)-->\s*$")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


@dataclass(frozen=True)
class Block:
    """One fenced code block: its page, first line (1-based, the fence), language, text, and why it is not run."""

    page: Path
    line: int
    language: str
    text: str
    not_run: str | None  # None: unmarked; "" a marker without a reason

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(REPO_ROOT)}:{self.line}"


def _blocks(page: Path) -> tuple[list[Block], list[int]]:
    """The fenced blocks of ``page``, and the lines of markers that no fence follows."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, stray, i = [], [], 0
    while i < len(lines):
        mark = _MARK.match(lines[i].strip())
        if mark and not (i + 1 < len(lines) and _FENCE.match(lines[i + 1])):
            stray.append(i + 1)
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == fence.group(1)), len(lines))
        before = _MARK.match(lines[i - 1].strip()) if i > 0 else None
        blocks.append(Block(page, i + 1, fence.group(2).lower(), "\n".join(lines[i + 1:end]) + "\n",
                            None if before is None else before.group(1).strip()))
        i = end + 1
    return blocks, stray


ALL_BLOCKS = [block for page in PAGES for block in _blocks(page)[0]]
RUNNABLE = [b for b in ALL_BLOCKS if b.not_run is None and b.language in PYTHON | SHELL]


def _commands(text: str) -> list[list[str]]:
    """The commands of a shell block (continuation lines joined, comments dropped), as argv lists."""
    joined = re.sub(r"\\\n", " ", text)
    return [argv for argv in (shlex.split(line, comments=True) for line in joined.splitlines()) if argv]


def _quick(fit):
    """``fit`` capped for the docs test (see the module docstring)."""

    @functools.wraps(fit)
    def quick_fit(train, val=None, *, time_limit=None, num_trials=1, hyperparameters=None, **kwargs):
        for starts_ray in ("search_space", "ray_address", "resume"):
            assert not kwargs.get(starts_ray), f"a documented fit with {starts_ray}= starts Ray: mark its block"
        hyperparameters = dict(hyperparameters or {})
        if hyperparameters.get("pretrained", "auto") == "auto":
            hyperparameters["pretrained"] = None
        return fit(train.subset(TRAIN_IMAGES), None if val is None else val.subset(VAL_IMAGES),
                   time_limit=min(time_limit or CAP_SECONDS, CAP_SECONDS), num_trials=1,
                   hyperparameters=hyperparameters, **kwargs)

    return quick_fit


def _patch_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    quick = _quick(detect_automl.api.fit)
    monkeypatch.setattr(detect_automl.api, "fit", quick)  # the CLI imports it from here when it runs
    monkeypatch.setattr(detect_automl, "fit", quick)


def _run_cli(block: Block) -> None:
    for argv in _commands(block.text):
        assert argv[0] == "detect-automl", f"{block.name}: only detect-automl commands run here; mark the block"
        assert cli_main(argv[1:]) == 0, f"{block.name}: {shlex.join(argv)} failed"


def _setup_commands() -> list[str]:
    """The README's two set-up commands (the first two shell blocks)."""
    return [b.text.strip() for b in ALL_BLOCKS if b.page.name == "README.md" and b.language in SHELL][:2]


@pytest.fixture(scope="session")
def docs_runs(tmp_path_factory, datasets_dir) -> Path:
    """``runs/`` with ``raccoon/model``, made by the README's set-up ``detect-automl fit`` (capped)."""
    root = tmp_path_factory.mktemp("docs-setup")
    (root / "datasets").symlink_to(datasets_dir, target_is_directory=True)
    fit_command = _setup_commands()[0].split("&&")[-1].strip()
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(root)
        _patch_fit(monkeypatch)
        _run_cli(Block(REPO_ROOT / "README.md", 0, "bash", fit_command, None))
    assert (root / "runs" / "raccoon" / "model" / "config.json").is_file()
    return root / "runs"


_WORKDIRS: dict[Path, Path] = {}


@pytest.fixture
def page_dir(request, tmp_path_factory, datasets_dir, docs_runs) -> Path:
    """The working folder of the page whose block runs (made at its first block)."""
    page = request.node.callspec.params["block"].page
    if page not in _WORKDIRS:
        folder = tmp_path_factory.mktemp(f"docs-{page.stem}")
        (folder / "datasets").symlink_to(datasets_dir, target_is_directory=True)
        shutil.copytree(docs_runs, folder / "runs")
        _WORKDIRS[page] = folder
    return _WORKDIRS[page]


@pytest.mark.slow
@pytest.mark.parametrize("block", RUNNABLE, ids=[b.name for b in RUNNABLE])
def test_block_runs(block: Block, page_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.chdir(page_dir)
    _patch_fit(monkeypatch)
    try:
        if block.language in PYTHON:
            exec(compile(block.text, block.name, "exec"), {"__name__": "__main__"})  # noqa: S102 - the docs' own code
        else:
            _run_cli(block)
    finally:
        plt.close("all")


def test_every_code_block_runs_or_says_why() -> None:
    """Each python or shell block runs (it is a ``test_block_runs`` case) or is marked with a reason;
    other blocks are plain text; every marker sits right above a fence."""
    problems = []
    for page in PAGES:
        problems += [f"{page.relative_to(REPO_ROOT)}:{line}: a not-run marker with no fence below it"
                     for line in _blocks(page)[1]]
        problems += [f"{page.relative_to(REPO_ROOT)}:{i}: an indented fence (this test reads fences at the margin)"
                     for i, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
                     if re.match(r"^\s+(`{3,}|~{3,})", line)]
    for block in ALL_BLOCKS:
        if block.not_run == "":
            problems.append(f"{block.name}: 'not run' without a reason")
        elif block.language not in PYTHON | SHELL | NOT_CODE:
            problems.append(f"{block.name}: fence language {block.language!r}: use one of "
                            f"{sorted(PYTHON | SHELL | NOT_CODE)}")
        elif block.not_run is None and block.language in SHELL:
            if any(argv[0] != "detect-automl" for argv in _commands(block.text)):
                problems.append(f"{block.name}: a shell block that is not only detect-automl commands must be "
                                "marked <!-- not run: REASON -->")
    assert not problems, "\n".join(problems)
    assert {b.name for b in RUNNABLE} == {b.name for b in ALL_BLOCKS
                                          if b.not_run is None and b.language in PYTHON | SHELL}
    assert any(b.language in PYTHON for b in RUNNABLE)


def test_readme_test_command_is_what_ci_runs() -> None:
    ci = (REPO_ROOT / ".ci" / "run").read_text().splitlines()
    command = next(line for line in ci if line.startswith("python3 -m venv"))
    install, tests = _setup_commands()
    assert tests == command
    assert install.startswith("python3 -m venv .venv && . .venv/bin/activate && pip install -e . && detect-automl fit ")


def test_every_docs_page_is_linked_from_readme() -> None:
    linked = {(REPO_ROOT / target.split("#")[0]).resolve()
              for target in _LINK.findall((REPO_ROOT / "README.md").read_text(encoding="utf-8"))}
    missing = [str(p.relative_to(REPO_ROOT)) for p in PAGES[1:] if p.resolve() not in linked]
    assert not missing, f"docs pages not linked from README.md: {missing}"


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors of a markdown page."""
    heads = [line.lstrip("#").strip() for line in page.read_text(encoding="utf-8").splitlines()
             if re.match(r"^#{1,6} ", line)]
    return {re.sub(r"[^\w\- ]", "", h.lower().replace("`", "")).replace(" ", "-") for h in heads}


def test_relative_links_point_to_existing_files_and_headings() -> None:
    broken = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for target in _LINK.findall(text):
            if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.relative_to(REPO_ROOT)}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
                broken.append(f"{page.relative_to(REPO_ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_models_table_is_torchvisions_figures() -> None:
    """docs/models.md lists every registry model with torchvision's COCO mAP, GFLOPs and parameters."""
    from detect_automl.models.registry import get_spec, list_models

    rows = {}
    for line in (REPO_ROOT / "docs" / "models.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells
    assert sorted(rows) == list_models()
    for name, (_, _, _, coco_map, gflops, params, _) in rows.items():
        meta = get_spec(name).coco_weights.meta
        assert float(coco_map) == meta["_metrics"]["COCO-val2017"]["box_map"], name
        ops = meta["_ops"]
        assert float(gflops) == (round(ops, 2) if ops < 10 else round(ops, 1) if ops < 100 else round(ops)), name
        assert params == f"{meta['num_params'] / 1e6:.1f} M", name
