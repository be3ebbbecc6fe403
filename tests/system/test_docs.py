"""The manual pages, README and example configuration must not drift from the code.

Every click command and option, every configuration key the parser accepts, every exit code
and every ``--json`` field is looked up in the document that promises to describe it, and the
reverse (a documented command, option or key that no longer exists) fails too.

Matching is done on the mdoc *source* with ``\\-`` unescaped, not on mandoc's rendering: the
source keeps the structure (``.It Cm sync`` opens the item for ``sync``, ``Fl -json`` is a
flag), so an option is checked inside the item of the command that owns it, and the checks
run where mandoc is not installed. mandoc itself only has to say the pages are lint-clean.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from pop3s_fetch import __version__, check, config, report
from pop3s_fetch.cli import cli
from pop3s_fetch.errors import ExitCode, TLSError
from pop3s_fetch.sync import AccountResult
from tests.support import server_unavailable

REPO_ROOT = Path(__file__).resolve().parents[2]
MAN1 = REPO_ROOT / "man" / "pop3s-fetch.1"
MAN5 = REPO_ROOT / "man" / "pop3s-fetch.toml.5"
MAN_PAGES = (MAN1, MAN5)
README = REPO_ROOT / "README.md"
EXAMPLE_CONFIG = REPO_ROOT / "config.example.toml"
PYPROJECT = REPO_ROOT / "pyproject.toml"

CommandPath = tuple[str, ...]


# --- reading mdoc ---------------------------------------------------------------------------


def mdoc(path: Path) -> str:
    """The page's source with the escapes that hide plain text undone (``\\-`` is ``-``)."""
    return path.read_text(encoding="utf-8").replace("\\-", "-").replace("\\&", "")


def section(source: str, title: str) -> str:
    """The lines of ``.Sh TITLE`` up to the next ``.Sh``."""
    match = re.search(rf"^\.Sh {re.escape(title)}\n(.*?)(?=^\.Sh |\Z)", source, re.M | re.S)
    assert match is not None, f"no .Sh {title} section"
    return match.group(1)


def item_names(text: str, macro: str = "Cm") -> list[str]:
    """The first word of each ``.It Cm WORD`` list item (``.It Cm sync Op ...`` -> sync)."""
    return re.findall(rf"^\.It {macro} (\S+)", text, re.M)


def command_items(source: str) -> dict[str, str]:
    """COMMANDS section: command path ("password set") -> the text of its ``.It Cm`` item.

    An item runs to the next ``.It Cm`` (options are nested ``.It Fl`` items). The path is the
    lower-case words after ``Cm``, up to the first macro (macros are capitalised).
    """
    items: dict[str, str] = {}
    blocks = re.split(r"^(?=\.It Cm )", section(source, "COMMANDS"), flags=re.M)
    for block in blocks[1:]:
        words = []
        for word in block.split("\n", 1)[0].split()[2:]:
            if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", word):
                break
            words.append(word)
        items[" ".join(words)] = block
    return items


def documents_flag(text: str, flag: str) -> bool:
    """Whether ``text`` has a list item for the flag: ``--json`` needs ``.It Fl -json``.

    Only ``.It Fl`` lines count, so a flag named in a synopsis or in passing is not enough.
    """
    pattern = re.compile(rf"\bFl\s+{re.escape(flag[1:])}(?![\w-])")
    items = re.findall(r"^\.It Fl .*$", text, re.M)
    return any(pattern.search(line) for line in items)


def flags_in(text: str) -> set[str]:
    """Every flag written with ``Fl`` in ``text``, as typed (``-j``, ``--jobs``)."""
    return {"-" + arg for arg in re.findall(r"\bFl\s+(-?[\w][\w-]*)", text)}


# --- the click tree -------------------------------------------------------------------------


def walk(
    command: click.Command, path: CommandPath = ()
) -> Iterator[tuple[CommandPath, click.Command]]:
    """Every command and group under ``command``, itself first, with its path of names."""
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from walk(sub, (*path, name))


COMMANDS = dict(walk(cli))
SUBCOMMANDS = {path: command for path, command in COMMANDS.items() if path}
LEAVES = {p: c for p, c in SUBCOMMANDS.items() if not isinstance(c, click.Group)}


def options(command: click.Command) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option)]


def flags(option: click.Option) -> list[str]:
    return [*option.opts, *option.secondary_opts]


def ids(paths: Iterable[CommandPath]) -> list[str]:
    return [" ".join(path) or "pop3s-fetch" for path in paths]


def help_flags() -> list[str]:
    names: list[str] = cli.context_settings["help_option_names"]
    return names


# --- pop3s-fetch(1): commands and options ---------------------------------------------------


@pytest.mark.parametrize("path", list(SUBCOMMANDS), ids=ids(SUBCOMMANDS))
def test_every_command_has_an_item_in_commands(path: CommandPath) -> None:
    assert " ".join(path) in command_items(mdoc(MAN1))


@pytest.mark.parametrize("path", list(LEAVES), ids=ids(LEAVES))
def test_every_command_is_in_the_synopsis(path: CommandPath) -> None:
    synopsis = section(mdoc(MAN1), "SYNOPSIS")
    lines = re.findall(rf"^\.Cm {re.escape(path[0])}\b.*$", synopsis, re.M)
    assert any(re.search(rf"\b{re.escape(path[-1])}\b", line) for line in lines), path


@pytest.mark.parametrize("path", list(SUBCOMMANDS), ids=ids(SUBCOMMANDS))
def test_every_option_and_argument_is_in_its_commands_item(path: CommandPath) -> None:
    item = command_items(mdoc(MAN1))[" ".join(path)]
    missing = [f for o in options(COMMANDS[path]) for f in flags(o) if not documents_flag(item, f)]
    assert missing == [], f"{' '.join(path)}: options missing from its item: {missing}"
    for argument in (p for p in COMMANDS[path].params if isinstance(p, click.Argument)):
        name = argument.name or ""
        singular = name[:-1] if argument.nargs == -1 and name.endswith("s") else name
        assert re.search(rf"\bAr {singular}\b", item), f"{' '.join(path)}: Ar {singular}"


def test_every_global_option_is_in_options() -> None:
    text = section(mdoc(MAN1), "OPTIONS")
    wanted = [f for o in options(cli) for f in flags(o)] + help_flags()
    assert [f for f in wanted if not documents_flag(text, f)] == []


def test_no_documented_command_or_flag_is_unknown_to_the_program() -> None:
    source = mdoc(MAN1)
    known_paths = {" ".join(path) for path in SUBCOMMANDS}
    assert set(command_items(source)) - known_paths == set()
    known_flags = {f for c in COMMANDS.values() for o in options(c) for f in flags(o)}
    assert flags_in(source) - known_flags - set(help_flags()) == set()


@pytest.mark.parametrize("path", list(COMMANDS), ids=ids(COMMANDS))
def test_every_command_and_option_has_help(path: CommandPath) -> None:
    command = COMMANDS[path]
    result = CliRunner().invoke(cli, [*path, "--help"], prog_name="pop3s-fetch")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: pop3s-fetch {' '.join(path)}".rstrip())
    summary = (command.help or "").strip().splitlines()
    assert summary, f"{' '.join(path)} has no help text"
    assert summary[0] in result.output
    assert [flags(o) for o in options(command) if not (o.help or "").strip()] == []


# --- exit status ----------------------------------------------------------------------------

EXIT_CODES = {int(code) for code in ExitCode} | {report.PARTIAL_FAILURE}


def test_exit_status_section_lists_every_exit_code() -> None:
    text = section(mdoc(MAN1), "EXIT STATUS")
    documented = [int(code) for code in re.findall(r"^\.It (\d+)$", text, re.M)]
    assert sorted(documented) == sorted(EXIT_CODES)


def test_readme_exit_status_table_lists_every_exit_code() -> None:
    readme = README.read_text(encoding="utf-8")
    match = re.search(r"^## Exit status\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    assert match is not None, "README.md has no '## Exit status' section"
    rows = {int(code) for code in re.findall(r"^\|\s*(\d+)\s*\|", match.group(1), re.M)}
    assert sorted(rows) == sorted(EXIT_CODES)


# --- JSON OUTPUT ----------------------------------------------------------------------------


def sample_document() -> dict[str, object]:
    """A --json document with one account that worked, one that failed, one held back."""
    import datetime

    from pop3s_fetch.serverpolicy import LoginDelay

    results = [
        AccountResult("ok", fetched=1, octets=10, on_server=3, skipped=2),
        AccountResult("bad", error=TLSError("refused", hint="pin it")),
        AccountResult("later", login_delay=LoginDelay(900, 1.8e9)),
    ]
    started = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    document = report.json_document(results, started, 1.5)
    return json.loads(json.dumps(document))  # type: ignore[no-any-return]


def field_names(value: object) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {name for v in value.values() for name in field_names(v)}
    if isinstance(value, list):
        return {name for v in value for name in field_names(v)}
    return set()


def sample_check_document() -> dict[str, object]:
    """A ``sync --dry-run --json`` document (check's schema with every optional field)."""
    import datetime

    from pop3s_fetch.check import Deletion, Survey
    from pop3s_fetch.pop3 import RemoteMessage

    surveys = [
        Survey(
            "ok",
            on_server=2,
            fetch=[RemoteMessage(2, "b", 10)],
            delete=[Deletion(1, "a", "delivered earlier")],
        ),
        Survey("bad", error=TLSError("refused", hint="pin it")),
    ]
    started = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    document = check.json_document(surveys, started, 1.5, dry_run=True)
    return json.loads(json.dumps(document))  # type: ignore[no-any-return]


def test_json_output_section_documents_every_field_of_the_schema() -> None:
    text = section(mdoc(MAN1), "JSON OUTPUT")
    assert f"Ql {report.SCHEMA}" in text
    assert f"Ql {check.SCHEMA}" in text
    fields = field_names(sample_document())
    check_fields = field_names(sample_check_document())
    for names in (fields, check_fields):
        assert sorted(f for f in names if not re.search(rf"\bCm {f}\b", text)) == []
    assert set(item_names(text)) - fields - check_fields == set()


# --- pop3s-fetch.toml(5) and config.example.toml --------------------------------------------

# config.py's own tables of the keys it accepts; nothing is listed twice here.
ACCOUNT_KEYS = sorted(config.ACCOUNT_KEYS)
OAUTH2_KEYS = sorted(config.OAUTH2_KEYS)


def test_account_keys_section_has_an_item_for_every_account_key() -> None:
    text = section(mdoc(MAN5), "ACCOUNT KEYS")
    assert sorted(item_names(text)) == ACCOUNT_KEYS


def test_oauth2_keys_section_has_an_item_for_every_oauth2_key() -> None:
    text = section(mdoc(MAN5), "OAUTH2 KEYS")
    assert sorted(item_names(text)) == OAUTH2_KEYS


def test_man5_names_the_top_level_tables_and_every_preset() -> None:
    source = mdoc(MAN5)
    for table in config._TOP_LEVEL_KEYS:
        assert f"Cm [{table}" in source
    presets = item_names(section(source, "OAUTH2 KEYS"), macro="Ql")
    assert presets == list(config.OAUTH2_PRESETS)
    for preset in config.OAUTH2_PRESETS.values():
        for value in (preset.token_endpoint, preset.device_endpoint, *preset.scopes):
            assert value in source


@pytest.mark.parametrize("key", ACCOUNT_KEYS + OAUTH2_KEYS)
def test_example_config_shows_every_key(key: str) -> None:
    """Set, or shown commented out (``# key = ...``) where a value cannot apply to the example."""
    example = EXAMPLE_CONFIG.read_text(encoding="utf-8")
    if key == "oauth2":
        assert re.search(r"^\[accounts\.[\w-]+\.oauth2\]$", example, re.M)
    else:
        assert re.search(rf"^#? ?{key} = ", example, re.M), key


def toml_examples(source: str) -> list[str]:
    blocks = re.findall(
        r"^\.Bd -literal[^\n]*\n(.*?)^\.Ed$", section(source, "EXAMPLES"), re.M | re.S
    )
    return [block for block in blocks if block.lstrip().startswith("[")]


def test_man5_examples_are_valid_configurations(tmp_path: Path) -> None:
    examples = toml_examples(mdoc(MAN5))
    assert examples
    for text in examples:
        loaded = config.parse(text, tmp_path / "config.toml")
        assert loaded.accounts


# --- mandoc ---------------------------------------------------------------------------------


@pytest.mark.parametrize("page", MAN_PAGES, ids=[p.name for p in MAN_PAGES])
def test_man_page_is_lint_clean(page: Path) -> None:
    mandoc = shutil.which("mandoc")
    if mandoc is None:
        server_unavailable("mandoc is not installed (apt-get install mandoc)")
    done = subprocess.run(
        [mandoc, "-T", "lint", "-W", "warning", str(page)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


# --- installation ---------------------------------------------------------------------------


def man_data_path(page: Path) -> str:
    """Where a page belongs under a prefix: ``share/man/man5/pop3s-fetch.toml.5``."""
    return f"share/man/man{page.suffix[1:]}/{page.name}"


def test_pyproject_installs_every_man_page() -> None:
    """Fast and offline: the wheel's shared-data table maps each page to share/man/manN/."""
    shared = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["hatch"]["build"][
        "targets"
    ]["wheel"]["shared-data"]
    pages = sorted((REPO_ROOT / "man").glob("*.[1-9]"))
    assert pages == sorted(MAN_PAGES)
    assert shared == {f"man/{p.name}": man_data_path(p) for p in pages}


_NO_BACKEND_ONLINE = ("No matching distribution found for hatchling", "Could not find a version")


def test_built_wheel_contains_both_man_pages(tmp_path: Path) -> None:
    """A real build: what pip installs is what the wheel holds, not what pyproject says.

    hatchling is not in the test venv, so unless it is, pip fetches it into an isolated build
    environment; offline that is a skip here (and a failure when CI requires everything).
    """
    has_backend = importlib.util.find_spec("hatchling") is not None
    isolation = ["--no-build-isolation"] if has_backend else []
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check"]
    done = subprocess.run(
        [*command, *isolation, "-q", "-w", str(tmp_path), str(REPO_ROOT)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if done.returncode != 0 and any(text in done.stderr for text in _NO_BACKEND_ONLINE):
        server_unavailable(f"cannot fetch hatchling to build a wheel (offline?): {done.stderr}")
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("pop3s_fetch-*.whl")
    data = f"pop3s_fetch-{__version__}.data/data"
    with zipfile.ZipFile(wheel) as archive:
        for page in MAN_PAGES:
            assert archive.read(f"{data}/{man_data_path(page)}") == page.read_bytes()


def test_the_man_examples_after_config_example_name_an_example_account() -> None:
    """EXAMPLES' hand-made start runs password set on an account of config.example.toml
    (it named "work", which the example does not define: unknown account, exit 78)."""
    source = MAN1.read_text()
    examples = source[source.index(".Sh EXAMPLES") :]
    examples = examples[: examples.index(".Sh ", 1)]
    start = examples.index("pop3s-fetch config example >")
    named = re.findall(r"pop3s-fetch password set (\S+)", examples[start:])
    defined = tomllib.loads((REPO_ROOT / "config.example.toml").read_text())["accounts"]
    assert named
    assert [name for name in named if name not in defined] == []
    assert "mkdir -p ~/.config/pop3s-fetch" in examples[:start]
