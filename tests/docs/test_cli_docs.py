"""Every ``ferry ...`` command the README and docs/ show is checked against the real click
commands (``ferry.cli.main.cli``, subcommands loaded as ``ferry`` loads them): the
subcommand path exists, every option exists on that command, option values parse with the
option's type (choices, ints), and the right number of arguments is given. The README's
quick-start commands are also run against a server by tests/cli/test_readme.py.

And every command and subcommand has its section in docs/cli.md naming each of its options.
"""

from __future__ import annotations

import re
import shlex

import click
import pytest

from ferry.cli.main import cli
from tests.conftest import ROOT
from tests.docs._markdown import Shown, sections, shown_commands, until_operator

_OPTION = re.compile(r"(?<![\w-])(--?[a-zA-Z][\w-]*)")


def _walk(group: click.Group, ctx: click.Context, path: tuple[str, ...] = ()):
    """(path, command) for every command under ``group``, groups included."""
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from _walk(command, click.Context(command, info_name=name, parent=ctx),
                             (*path, name))


def _root() -> click.Context:
    return click.Context(cli, info_name="ferry")


def _opts(command: click.Command, ctx: click.Context) -> set[str]:
    return {o for p in command.get_params(ctx) if isinstance(p, click.Option)
            for o in (*p.opts, *p.secondary_opts)}


def check_command(args: tuple[str, ...] | list[str]) -> str | None:
    """None when ``ferry ARGS`` parses with the real commands, else why not. Option values
    are converted by each option's type, except paths that must exist (the reader's files)."""
    args = list(args)
    ctx = _root()
    command: click.Command = cli
    try:
        while isinstance(command, click.Group):
            try:  # group options (--version), and batch's default subcommand rule
                command.parse_args(ctx, list(args))
            except click.exceptions.Exit:  # --version, --help, bare `ferry batch`: fine
                return None
            rest = [*ctx._protected_args, *ctx.args]
            if not rest:
                return None
            name, sub, args = command.resolve_command(ctx, rest)
            assert sub is not None and name is not None
            command = sub
            ctx = click.Context(command, info_name=name, parent=ctx)
        parser = command.make_parser(ctx)
        opts, extra, order = parser.parse_args(args=list(args))
        if extra and not ctx.allow_extra_args:
            return f"unexpected extra arguments {extra} for `{ctx.command_path}`"
        given = {name: value for name, value in opts.items()  # strings; flags hold a bool
                 if isinstance(value, str) or (isinstance(value, (tuple, list)) and value)}
        for param in dict.fromkeys(order):
            if param.name not in given or (isinstance(param.type, click.Path)
                                           and param.type.exists):
                continue
            param.type_cast_value(ctx, given[param.name])  # type: ignore[index]
        for param in command.params:
            if isinstance(param, click.Argument) and param.required and param.name not in given:
                return f"`{ctx.command_path}` needs argument {param.human_readable_name}"
        if ctx.command_path == "ferry schedule add":  # the batch command line after --
            inner = list(given["command"])
            return check_command(inner[1:] if inner[:1] == ["ferry"] else inner)
    except click.UsageError as exc:
        return f"`{ctx.command_path}`: {exc.format_message()}"
    return None


def check_synopsis(args: tuple[str, ...]) -> str | None:
    """For a usage line (`[--host]`, `A|B`) or a mention in prose: the subcommand path
    exists and every option named exists on it (values are placeholders)."""
    ctx = _root()
    command: click.Command = cli
    words = [w.strip("[]") for w in args]
    i = 0
    while isinstance(command, click.Group) and i < len(words):
        sub = command.get_command(ctx, words[i])
        if sub is not None:
            i += 1
        elif ctx.command_path == "ferry batch":  # `ferry batch MODEL ...` is batch score
            sub = command.get_command(ctx, "score")
        else:
            break
        assert sub is not None
        ctx = click.Context(sub, info_name=sub.name, parent=ctx)
        command = sub
    text = " ".join(words[i:])
    head, sep, tail = text.partition(" -- ")
    known = _opts(command, ctx)
    unknown = [o for o in _OPTION.findall(head) if o not in known]
    if unknown:
        return f"`{ctx.command_path}` has no option {', '.join(unknown)}"
    if sep and ctx.command_path == "ferry schedule add":
        return check_synopsis(tuple(tail.split()))
    return None


def _check(shown: Shown) -> str | None:
    return check_synopsis(shown.args) if shown.synopsis else check_command(shown.args)


SHOWN = shown_commands()


def test_the_docs_show_commands():
    pages = {s.page for s in SHOWN}
    assert len(SHOWN) >= 80 and {"README.md", "docs/cli.md"} <= pages, pages
    full = [s for s in SHOWN if not s.synopsis]
    assert len(full) >= 40, [s.where() for s in full]


def test_every_shown_command_parses():
    wrong = [f"{s.where()}\n    -> {why}" for s in SHOWN if (why := _check(s))]
    assert not wrong, "commands in the docs that the CLI does not accept:\n" + "\n".join(wrong)


@pytest.mark.parametrize(("args", "expected"), [
    (("serve", "./models", "--no-such-flag"), "No such option '--no-such-flag'"),
    (("predict", "iris", "--data"), "Option '--data' requires an argument"),
    (("monitor", "iris", "--format", "xml"), "'xml' is not one of"),
    (("predict", "iris", "--data", "[]", "--version", "two"), "'two' is not a valid integer"),
    (("schedule", "frobnicate"), "No such command 'frobnicate'"),
    (("feedback", "r-1", "r-2", "--label", "1"), "unexpected extra arguments ['r-2']"),
    (("schedule", "add", "n", "--cron", "* * * * *", "--", "batch", "iris", "--inptu", "x"),
     "`ferry batch score`: No such option '--inptu'"),
    (("batch", "iris", "--workers", "0"), "0 is not in the range x>=1"),
])
def test_the_check_rejects_wrong_commands(args, expected):
    why = check_command(args)
    assert why is not None and expected in why, why


@pytest.mark.parametrize(("args", "expected"), [
    (("serve", "[--http-prot", "8000]"), "no option --http-prot"),
    (("batch", "runs", "--model", "M", "--resume", "X"), "no option --resume"),
    (("schedule", "add", "NAME", "--cron", "EXPR", "--", "batch", "MODEL", "--outptu", "P"),
     "no option --outptu"),
])
def test_the_synopsis_check_rejects_unknown_options(args, expected):
    why = check_synopsis(args)
    assert why is not None and expected in why, why


def test_every_command_has_a_section_in_cli_md_naming_its_options():
    page = ROOT / "docs" / "cli.md"
    heads = sections(page)
    missing = []
    for path, command in _walk(cli, _root()):
        prefix = "`ferry " + " ".join(path)
        found = [body for head, body in heads
                 if re.search(re.escape(prefix) + r"[` ]", head)]
        if not found:
            missing.append(f"no heading `ferry {' '.join(path)} ...` for that command")
            continue
        body = "\n".join(found)
        for param in command.params:
            if getattr(param, "hidden", False):
                continue
            names = [*param.opts, *param.secondary_opts] if isinstance(param, click.Option) \
                else [param.human_readable_name]
            if not any(re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", body) for n in names):
                missing.append(f"ferry {' '.join(path)}: {' / '.join(names)} not described")
    assert not missing, "docs/cli.md is missing:\n" + "\n".join(missing)


def test_every_command_is_in_the_readme_cli_table():
    readme = (ROOT / "README.md").read_text()
    cli_section = readme[readme.index("## CLI"):]
    cli_section = cli_section[:cli_section.index("\n## ", 1)]
    missing = [f"ferry {' '.join(path)}" for path, _ in _walk(cli, _root())
               if not re.search(r"`ferry " + re.escape(" ".join(path)) + r"[` ]", cli_section)]
    assert not missing, "README.md's CLI table does not show: " + ", ".join(missing)


def test_every_help_ends_with_examples_that_parse():
    wrong = []
    for path, command in _walk(cli, _root()):
        epilog = command.epilog or ""
        examples = [line.strip() for line in re.sub(r"\\\n\s*", " ", epilog).splitlines()
                    if line.strip().startswith("ferry ")]
        if not examples:
            wrong.append(f"ferry {' '.join(path)}: --help shows no example")
        for line in examples:
            args = until_operator(shlex.split(line, comments=True))[1:]
            synopsis = "..." in args or any(a.startswith("[") for a in args)
            why = check_synopsis(tuple(args)) if synopsis else check_command(args)
            if why:
                wrong.append(f"ferry {' '.join(path)} --help: {line}\n    -> {why}")
    assert not wrong, "\n".join(wrong)
