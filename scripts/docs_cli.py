"""MkDocs hook (mkdocs.yml `hooks:`): the command-line reference page, reference/cli.md, written at build time
from the `--help` of `sparsehead` and of every sub-command, so the page cannot drift from the parser."""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from mkdocs.structure.files import File

PAGE = "reference/cli.md"
WIDTH = 100  # the help's line width: fixed, so the page does not depend on the terminal that builds it
INTRO = """# Command line

Every sub-command's `--help`, as `sparsehead` prints it: generated from the parser when the site is built.
Plugin modules named in `SPARSEHEAD_PLUGINS` add their methods' keys to `sparsehead pretrain --help`; the
keys below are the built-in ones.
"""

# The docs describe the tree they are built from, not an installed copy of the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def _help(parser: argparse.ArgumentParser) -> str:
    parser.formatter_class = functools.partial(parser.formatter_class, width=WIDTH)
    return parser.format_help().rstrip()


def cli_reference() -> str:
    """The page's Markdown: the top-level help, then each sub-command's in the parser's order."""
    from sparsehead.cli import build_parser

    parser = build_parser()
    (commands,) = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    sections = [("sparsehead", parser)] + [(f"sparsehead {name}", sub) for name, sub in commands.choices.items()]
    body = [f"## {title}\n\n```text\n{_help(p)}\n```\n" for title, p in sections]
    return INTRO + "\n" + "\n".join(body)


def on_files(files, config):
    files.append(File.generated(config, PAGE, content=cli_reference()))
    return files
