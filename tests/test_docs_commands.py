"""Every command that README.md and docs/*.md show works on a fresh clone.

The commands are read from the pages' code blocks (a line continued with ``\\`` is one command). Each
``python -m fmnist_lightning`` command (and ``torchrun ... -m fmnist_lightning``) is checked without running it: a
known command, existing ``--config`` files and ``configs/``/``weights/`` paths, ``DATA_DIR`` for every data folder, a
``--ckpt_path`` that exists or that the command can find (``best``, ``last``, a file an earlier command of the block
writes). The cheap ones then run for real on a small Fashion-MNIST-format dataset: ``--help``, ``models``, each
recipe's ``fit`` once with ``--trainer.fast_dev_run true``, and a ``test`` and a ``predict`` of a published
checkpoint. ``python benchmarks/...`` and ``make`` lines are checked against the scripts' options and the Makefile,
and links between the pages against the files and headings they point at.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from support import REPO, run_in_process, write_dataset
from test_cli import CONFIGS as EVERY_CONFIG_FITS

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# user-supplied paths and values, which the pages name in capitals; DATA_DIR is the only name for the data folder
PLACEHOLDERS = {"DATA_DIR", "RUN_DIR", "FILE", "PHOTOS", "KERAS_FILE", "HOST", "PYTHON_WITH_TF"}
SHELL_OPERATORS = {"&", "&&", "|", "||", ";"}
LAUNCHER = re.compile(r"(?:^|\s)-m fmnist_lightning(?=\s|$)")
REPO_PATH = re.compile(r"(?<![\w/])((?:configs|weights|scripts|benchmarks)/[\w./-]*\w)")
PLACEHOLDER_LIKE = re.compile(r"^([A-Z][A-Z0-9_]*)(?:/|$)")
TINY_TRAIN_IMAGES = 6500  # fast.yaml holds out 6,000 for validation, the project's recipes 5,000


@dataclass(frozen=True)
class ShellLine:
    page: str
    line: int
    block: int  # commands of one code block may use a file that an earlier one of the block writes
    text: str

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


@dataclass(frozen=True)
class DocCommand:
    shell: ShellLine
    args: tuple[str, ...]  # what follows `-m fmnist_lightning`, up to a redirection or another command

    @property
    def name(self) -> str:
        return self.args[0] if self.args and not self.args[0].startswith("-") else ""

    def values(self, flag: str) -> list[str]:
        return [value for option, value in zip(self.args, self.args[1:], strict=False) if option == flag]

    @property
    def configs(self) -> tuple[str, ...]:
        return tuple(self.values("--config"))


def shell_lines() -> list[ShellLine]:
    """The logical lines of every fenced code block but Python ones, in page order."""
    lines: list[ShellLine] = []
    for page in PAGES:
        fence: str | None = None
        block = 0
        pending: list[str] = []
        first = 0
        for number, raw in enumerate(page.read_text().splitlines(), start=1):
            stripped = raw.strip()
            if stripped.startswith("```"):
                fence = stripped[3:].strip() if fence is None else None
                block += 1
                continue
            if fence is None or fence == "python":
                continue
            if not pending:
                first = number
            pending.append(stripped.removesuffix("\\").strip())
            if not stripped.endswith("\\"):
                text = " ".join(pending).strip()
                if text and not text.startswith("#"):
                    lines.append(ShellLine(page.relative_to(REPO).as_posix(), first, block, text))
                pending = []
    return lines


def shell_words(text: str) -> list[str]:
    """The words of a shell line without its comment, up to the first redirection or command separator."""
    try:
        split = shlex.split(text, comments=True)
    except ValueError:  # a quotation that goes on in the next line (python -c '…')
        split = text.split()
    words = []
    for word in split:
        if word in SHELL_OPERATORS or re.match(r"^\d?>", word):
            break
        words.append(word)
    return words


def doc_commands() -> list[DocCommand]:
    commands = []
    for shell in shell_lines():
        found = LAUNCHER.search(shell.text)
        if found:
            commands.append(DocCommand(shell, tuple(shell_words(shell.text[found.end() :]))))
    return commands


COMMANDS = doc_commands()


def known_commands() -> set[str]:
    """The command names that ``--help`` lists (two spaces, then the name)."""
    done = subprocess.run(
        [sys.executable, "-m", "fmnist_lightning", "--help"], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return set(re.findall(r"^  ([a-z][a-z-]*) ", done.stdout, flags=re.MULTILINE))


@pytest.fixture(scope="module")
def commands_in_help() -> set[str]:
    return known_commands()


def test_the_pages_show_commands() -> None:
    names = {command.name for command in COMMANDS}
    assert {"fit", "test", "predict", "export", "compare", "cv", "publish"} <= names
    assert any(command.configs for command in COMMANDS)


def anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(REPO).as_posix())
def test_the_links_between_pages_resolve(page: Path) -> None:
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, fragment = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: link to {target}: no such file"
        if fragment and linked.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", linked.read_text(), flags=re.MULTILINE)
            assert fragment in {anchor(heading) for heading in headings}, f"{page.name}: no heading for #{fragment}"


def written_by_earlier_commands(command: DocCommand) -> set[str]:
    """Files that the commands before this one in its code block write (their ``--out``)."""
    written = set()
    for other in COMMANDS:
        if other.shell.page == command.shell.page and other.shell.block == command.shell.block:
            if other.shell.line >= command.shell.line:
                break
            written.update(other.values("--out"))
    return written


@pytest.mark.parametrize("command", COMMANDS, ids=[command.shell.where for command in COMMANDS])
def test_a_documented_command_names_what_exists(command: DocCommand, commands_in_help: set[str]) -> None:
    where = command.shell.where
    if command.name:
        assert command.name in commands_in_help, f"{where}: no command {command.name!r} in --help"
    else:
        assert command.args in (("--help",), ("-h",)), f"{where}: {command.args} is not a command"
    for config in command.configs:
        assert (REPO / config).is_file(), f"{where}: --config {config} does not exist"
    for word in command.args:
        for path in REPO_PATH.findall(word):
            assert (REPO / path).exists(), f"{where}: {path} does not exist"
        placeholder = PLACEHOLDER_LIKE.match(word)
        if placeholder and not word.startswith("-"):
            assert placeholder.group(1) in PLACEHOLDERS, f"{where}: {word}: say DATA_DIR, RUN_DIR, PHOTOS, …"
    for data_dir in command.values("--data.data_dir") + command.values("--data_dir"):
        assert data_dir == "DATA_DIR", f"{where}: the data folder is DATA_DIR everywhere, not {data_dir!r}"
    for ckpt in command.values("--ckpt_path"):
        root = PLACEHOLDER_LIKE.match(ckpt)
        findable = ckpt in ("best", "last") or (root and root.group(1) in PLACEHOLDERS) or (REPO / ckpt).exists()
        assert findable or ckpt in written_by_earlier_commands(command), f"{where}: --ckpt_path {ckpt} is not there"


def checked_script_lines() -> list[ShellLine]:
    return [
        line for line in shell_lines() if re.match(r"^(python|make)\s", line.text) and not LAUNCHER.search(line.text)
    ]


@pytest.mark.parametrize("shell", checked_script_lines(), ids=lambda shell: shell.where)
def test_a_documented_script_or_make_target_exists(shell: ShellLine) -> None:
    words = shell_words(shell.text)
    if words[0] == "make":
        targets = set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), flags=re.MULTILINE))
        for target in (word for word in words[1:] if "=" not in word):
            assert target in targets, f"{shell.where}: no make target {target!r}"
        for path in REPO_PATH.findall(" ".join(words[1:])):
            assert (REPO / path).exists(), f"{shell.where}: {path} does not exist"
        return
    if words[1] in ("-c", "-m"):  # python -c '…' and python -m pytest: nothing of the repository to check
        return
    script = REPO / words[1]
    assert script.is_file(), f"{shell.where}: {words[1]} does not exist"
    source = script.read_text()
    for option in (word for word in words[2:] if word.startswith("--")):
        assert f'"{option}"' in source, f"{shell.where}: {words[1]} has no option {option}"
    for path in REPO_PATH.findall(" ".join(words[2:])):
        assert (REPO / path).exists(), f"{shell.where}: {path} does not exist"


# -- run the cheap ones ----------------------------------------------------------------------------------------------
def runnable_fits() -> list[DocCommand]:
    """One ``fit`` per recipe (config files in order), the shortest the pages show. Not run here: a resume
    (``--ckpt_path``: fast_dev_run writes no checkpoint to resume), ``--print_config`` (nothing to train), another
    model class (``--model``: architecture.md's example, which tests/test_registry.py trains), DDP overlays and GPUs
    (several processes or a device CI lacks), any command with a placeholder other than DATA_DIR, and a bare
    ``fit --config FILE --data.data_dir DATA_DIR``: tests/test_cli.py fits every config file so, with fast_dev_run."""
    shortest: dict[tuple[str, ...], DocCommand] = {}
    for command in COMMANDS:
        words = " ".join(command.args)
        bare = (
            len(command.args) == 5 and len(command.configs) == 1 and command.values("--data.data_dir") == ["DATA_DIR"]
        )
        if bare and REPO / command.configs[0] in EVERY_CONFIG_FITS:
            continue
        skipped = ("--ckpt_path", "--print_config", "--model ", "configs/ddp.yaml", "accelerator gpu", "configs/gpu")
        placeholders = {match.group(1) for word in command.args if (match := PLACEHOLDER_LIKE.match(word))}
        if command.name != "fit" or any(text in words for text in skipped) or placeholders - {"DATA_DIR"}:
            continue
        if command.configs not in shortest or len(command.args) < len(shortest[command.configs].args):
            shortest[command.configs] = command
    return list(shortest.values())


def published_evaluations() -> list[DocCommand]:
    """The first ``test`` and the first ``predict`` of a published checkpoint that need no run folder."""
    chosen: dict[str, DocCommand] = {}
    for command in COMMANDS:
        ckpts = command.values("--ckpt_path")
        if command.name in ("test", "predict") and not command.configs and ckpts and ckpts[0].startswith("weights/"):
            chosen.setdefault(command.name, command)
    return list(chosen.values())


CHEAP = [*runnable_fits(), *published_evaluations()]


@pytest.fixture(scope="module")
def doc_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What the placeholders stand for in these runs: a small dataset and a folder of one photo."""
    root = tmp_path_factory.mktemp("doc_commands")
    write_dataset(root / "fmnist", num_train=TINY_TRAIN_IMAGES, num_test=100)
    photos = root / "photos"
    photos.mkdir()
    shirt = np.full((64, 48, 3), 250, np.uint8)
    shirt[8:56, 8:40] = 40  # a dark garment on a light background, as a product photo
    Image.fromarray(shirt).save(photos / "shirt.jpg")
    return {"DATA_DIR": str(root / "fmnist"), "PHOTOS": str(photos)}


def run_fmnist(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, "-m", "fmnist_lightning", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )


def test_help_and_models_answer(tmp_path: Path) -> None:
    help_text = run_fmnist(["--help"], tmp_path)
    assert help_text.returncode == 0, help_text.stderr
    models = run_fmnist(["models"], tmp_path)
    assert models.returncode == 0, models.stderr
    for model in ("LeNet5", "BrownleeCNN", "CustomCNN", "SeedEfficientNet", "EfficientNet", "FastCNN", "WideResNet"):
        assert model in models.stdout


@pytest.mark.parametrize("command", CHEAP, ids=[f"{c.shell.where}:{c.name}" for c in CHEAP])
def test_a_cheap_documented_command_runs(
    command: DocCommand, doc_inputs: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run in a scratch folder (so nothing lands in the repository), repository paths made absolute; in this process
    (``support.run_in_process``: the outcome is what is checked)."""
    args = [doc_inputs.get(word, str(REPO / word) if REPO_PATH.fullmatch(word) else word) for word in command.args]
    args = [re.sub(r"^PHOTOS(?=/|$)", doc_inputs["PHOTOS"], word) for word in args]
    if command.name == "fit":
        args += ["--trainer.fast_dev_run", "true", "--trainer.logger.init_args.save_dir", str(tmp_path / "logs")]
        if "--data.data_dir" not in args:
            args += ["--data.data_dir", doc_inputs["DATA_DIR"]]
        if any("compile: true" in (REPO / config).read_text() for config in command.configs):
            # compiling costs 15-30 s a model on 2 cores; tests/test_speed_options.py and the parity tests compile
            args += ["--speed.compile", "false"]
    assert run_in_process(args, tmp_path, monkeypatch) == 0, f"{command.shell.where}: {shlex.join(args)}"
