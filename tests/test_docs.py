"""The docs against the code: the configuration table, the make targets they name, their links.

Each check is a function that returns what is wrong (an empty list when nothing
is), run once on the repository's files and once on a broken copy, so a check
that stopped noticing anything would fail too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOC_FILES = [README, *sorted((ROOT / "docs").glob("*.md"))]

# The readers a row of the configuration table may name in its last column.
CONFIG = "app/config.py"
GUNICORN = "gunicorn.conf.py"
PROCFILE = "Procfile"
MAKE_RUN = "make run"

_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
_SHELL_READ = re.compile(r"\$\{([A-Z][A-Z0-9_]*)")
_MAKEFILE_TARGET = re.compile(r"^([A-Za-z][\w.-]*)\s*:(?!=)", re.MULTILINE)
_MAKE_COMMAND = re.compile(r"(?<![\w./-])make\s+(?:[A-Z_]+=\S*\s+)*([a-z][\w-]*)")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)


# Markdown


def split_code(text: str) -> tuple[str, list[str]]:
    """Return the prose (code blocks and inline code blanked) and the code (fenced blocks, inline spans)."""
    prose: list[str] = []
    code: list[str] = []
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            prose.append("")
        elif fenced:
            code.append(line)
            prose.append("")
        else:
            code.extend(_INLINE_CODE.findall(line))
            prose.append(_INLINE_CODE.sub("``", line))
    return "\n".join(prose), code


def section(text: str, title: str) -> str:
    """The text of the `## title` section, up to the next heading of its level."""
    match = re.search(rf"^## {re.escape(title)}\s*$(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"no '## {title}' section"
    return match.group(1)


def table_rows(text: str) -> list[list[str]]:
    """The cells of every body row of the markdown tables in `text`."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("|") or set(line) <= set("|- "):
            continue
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return [row for row in rows if row[0] not in ("variable", "key", "where", "knob")]


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of a markdown file's headings (not of lines in its code blocks)."""
    prose, _ = split_code(text.replace("`", ""))
    seen: dict[str, int] = {}
    found = set()
    for heading in _HEADING.findall(prose):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


# What the code reads


def _literal(node: ast.expr) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _is_environ(node: ast.expr) -> bool:
    """`env`, `environ` or `os.environ`: the names the project reads the environment through."""
    if isinstance(node, ast.Name):
        return node.id in ("env", "environ")
    return isinstance(node, ast.Attribute) and node.attr == "environ"


def python_reads(source: str) -> set[str]:
    """Variables a module reads: env.get("X"), os.environ.get("X"), os.environ["X"], _positive(env, "X", ...)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        name = None
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == "get" and _is_environ(func.value):
                name = _literal(node.args[0])
            elif isinstance(func, ast.Name) and func.id == "_positive" and len(node.args) > 1:
                name = _literal(node.args[1])
        elif isinstance(node, ast.Subscript) and _is_environ(node.value):
            name = _literal(node.slice)
        if name and _NAME.match(name):
            found.add(name)
    return found


def readers(root: Path = ROOT) -> dict[str, set[str]]:
    """The variables each reader the configuration table may name reads, from the sources."""
    makefile_run = re.search(r"^run:.*?(?=^\S|\Z)", (root / "Makefile").read_text(), re.MULTILINE | re.DOTALL)
    return {
        CONFIG: python_reads((root / "app/config.py").read_text()),
        GUNICORN: python_reads((root / "gunicorn.conf.py").read_text()),
        PROCFILE: set(_SHELL_READ.findall((root / "Procfile").read_text())),
        MAKE_RUN: python_reads((root / "app/embedded/__main__.py").read_text())
        | set(_SHELL_READ.findall(makefile_run.group(0) if makefile_run else "")),
    }


# The checks


def config_table(readme: str) -> dict[str, set[str]]:
    """Each variable of the README's configuration table, with the readers its row names."""
    table: dict[str, set[str]] = {}
    for row in table_rows(section(readme, "Configuration")):
        names = [name for name in _INLINE_CODE.findall(row[0]) if _NAME.match(name)]
        assert names, f"a configuration row names no variable: {row[0]}"
        for name in names:
            table[name] = set(_INLINE_CODE.findall(row[-1]))
    return table


def config_table_problems(readme: str, reads: dict[str, set[str]]) -> list[str]:
    """Variables of the table nobody reads (as its row says), and variables read that the table lacks."""
    table = config_table(readme)
    problems = []
    for name, named in sorted(table.items()):
        known = named & reads.keys()
        if not known:
            problems.append(f"{name}: its row names no reader among {sorted(reads)}")
        problems += [f"{name}: not read by {reader}" for reader in sorted(known) if name not in reads[reader]]
    for reader in (CONFIG, GUNICORN, PROCFILE):
        problems += [f"{name}: read by {reader}, missing from the table" for name in sorted(reads[reader] - set(table))]
    return problems


def make_targets(text: str) -> set[str]:
    """Targets of `make TARGET` commands in a markdown file's code (blocks and inline spans)."""
    _, code = split_code(text)
    return {target for snippet in code for target in _MAKE_COMMAND.findall(snippet)}


def make_target_problems(docs: dict[str, str], makefile: str) -> list[str]:
    """`make TARGET` named in the docs with no such target in the Makefile."""
    defined = set(_MAKEFILE_TARGET.findall(makefile))
    return [
        f"{name}: make {target} is not a Makefile target"
        for name, text in docs.items()
        for target in sorted(make_targets(text) - defined)
    ]


def link_problems(files: list[Path]) -> list[str]:
    """Relative links that lead nowhere: a missing file, or a #section with no such heading."""
    problems = []
    for path in files:
        prose, _ = split_code(path.read_text())
        for target in _LINK.findall(prose):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
                continue
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                problems.append(f"{path.name}: {target}: no such file")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text()):
                problems.append(f"{path.name}: {target}: no such section in {linked.name}")
    return problems


# On the repository


def test_docs_every_configuration_variable_is_read_and_every_read_one_is_in_the_table() -> None:
    assert config_table_problems(README.read_text(), readers()) == []


def test_docs_the_table_covers_what_settings_and_gunicorn_read() -> None:
    reads = readers()
    # A parser that found nothing would make the check above pass on anything.
    assert {"DATABASE_URL", "RECONCILE_INTERVAL", "ITEM_TIMEOUT_DEFAULT", "BATCHQ_VAR_DIR"} <= reads[CONFIG]
    assert {"BIND", "PORT", "WEB_WORKERS"} <= reads[GUNICORN]
    assert {"WORKER_CONCURRENCY", "FLOWER_PORT"} <= reads[PROCFILE]
    assert reads[CONFIG] | reads[GUNICORN] <= set(config_table(README.read_text()))


def test_docs_every_make_target_named_exists_in_the_makefile() -> None:
    docs = {path.name: path.read_text() for path in DOC_FILES}
    assert {"run", "test", "test-faults", "bench"} <= set().union(*map(make_targets, docs.values()))
    assert make_target_problems(docs, (ROOT / "Makefile").read_text()) == []


def test_docs_every_relative_link_leads_to_a_file_and_section_that_exist() -> None:
    assert link_problems(DOC_FILES) == []


# On broken copies: each check must notice what it checks for


def test_docs_table_check_catches_a_variable_nobody_reads_one_left_out_and_a_wrong_reader() -> None:
    readme = README.read_text()
    reads = readers()
    already = set(config_table_problems(readme, reads))

    def new_problems(text: str) -> set[str]:
        return set(config_table_problems(text, reads)) - already

    made_up = readme.replace(
        "| `BATCHQ_EVENTS_CHANNEL` |", "| `BATCHQ_MADE_UP` | x | x | `app/config.py` |\n| `BATCHQ_EVENTS_CHANNEL` |"
    )
    assert new_problems(made_up) == {"BATCHQ_MADE_UP: not read by app/config.py"}
    left_out = re.sub(r"^\| `ITEM_TIMEOUT_DEFAULT` .*\n", "", readme, flags=re.MULTILINE)
    assert new_problems(left_out) == {"ITEM_TIMEOUT_DEFAULT: read by app/config.py, missing from the table"}
    wrong_reader = readme.replace("| `8` | `gunicorn.conf.py` |", "| `8` | `app/config.py` |")
    assert new_problems(wrong_reader) == {"WEB_THREADS: not read by app/config.py"}
    no_reader = readme.replace("| `5555` | `Procfile` |", "| `5555` | Honcho |")
    assert new_problems(no_reader) == {
        "FLOWER_PORT: its row names no reader among ['Procfile', 'app/config.py', 'gunicorn.conf.py', 'make run']"
    }


def test_docs_readers_find_variables_in_every_form_the_code_reads_them() -> None:
    source = 'env.get("A_B")\nos.environ.get("C")\nos.environ["D"]\n_positive(env, "E", 1, int)\nd.get("NOT_ENV")\n'
    assert python_reads(source) == {"A_B", "C", "D", "E"}


def test_docs_make_check_catches_a_target_the_makefile_lacks() -> None:
    makefile = (ROOT / "Makefile").read_text()
    doc = 'Run `make test-faults`, then:\n\n```sh\nmake PYTEST_ARGS="-x" nosuch\n```\nWe make do with prose.\n'
    assert make_target_problems({"x.md": doc}, makefile) == ["x.md: make nosuch is not a Makefile target"]


@pytest.mark.parametrize(
    ("link", "problem"),
    [
        ("[a](missing.md)", "doc.md: missing.md: no such file"),
        ("[a](other.md#nowhere)", "doc.md: other.md#nowhere: no such section in other.md"),
        ("[a](#not-here)", "doc.md: #not-here: no such section in doc.md"),
        ("![a](../gone.png)", "doc.md: ../gone.png: no such file"),
    ],
)
def test_docs_link_check_catches_a_broken_link(tmp_path: Path, link: str, problem: str) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "other.md").write_text("# Other\n\n## A `code` section (here)\n\n```sh\n# not a heading\n```\n")
    good = "[b](other.md#a-code-section-here) [c](other.md) [d](https://example.org/x) [e](#the-doc)"
    (docs / "doc.md").write_text(f"# The doc\n\n{good}\n\n{link}\n\n`[f](not-a-link.md)`\n")
    assert link_problems([docs / "doc.md"]) == [problem]
