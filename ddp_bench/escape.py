"""One escaping layer per renderer: text from rows, paths and flags reaches the console, Markdown, plot labels and
LaTeX only through these functions, so that a field holding markup is shown as the characters it holds.

Rows travel between clusters and people type hostnames, paths and cluster names: none of that is markup.
This module imports only rich (whose own escape the console uses).
"""

from __future__ import annotations

import html
import re

from rich.markup import escape as _rich_escape

# C0 and C1 control characters, DEL, and the Unicode line and paragraph separators: one space each.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: object) -> str:
    """The text with every newline, tab and other control character as a space."""
    return _CONTROL.sub(" ", str(text))


def shortened(text: object, limit: int = 200) -> str:
    """One line of at most `limit` characters: a cell of 200 KB is not echoed whole into a message."""
    line = one_line(text)
    return line if len(line) <= limit else f"{line[: limit - 1]}…"


def console_text(text: object) -> str:
    """Text for rich's console and tables, which read `[...]` as markup: escaped with rich's own escape."""
    return _rich_escape(str(text))


# Markdown specials that could start a link, an image, code, emphasis or a table cell, or escape the next one.
_MARKDOWN_SPECIALS = re.compile(r"([\\`*\[\]|!#~])")
# An underscore starts emphasis only at a word's edge (GitHub's rule), so mnist_cnn is left as it is.
_EDGE_UNDERSCORE = re.compile(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")


def markdown_text(text: object) -> str:
    """Text for a Markdown line or table cell: one line, HTML as entities, Markdown specials backslashed, so a `|`
    adds no cell, a newline starts no heading, and no link, image or raw HTML passes through."""
    escaped = html.escape(one_line(text), quote=False)
    escaped = _MARKDOWN_SPECIALS.sub(r"\\\1", escaped)
    return _EDGE_UNDERSCORE.sub(r"\\_", escaped)


def markdown_code(text: object) -> str:
    """Text for inside a `code span` (paths, run ids): one line, no backtick to end it, `|` escaped (GitHub reads a
    table's cells before its code spans)."""
    return one_line(text).replace("`", "'").replace("|", "\\|")


def plot_text(text: object) -> str:
    """Text for a matplotlib label, title or tick: one line and every `$` escaped, so no mathtext from data (outside
    mathtext matplotlib leaves backslashes as they are). A leading `_` would hide a legend entry: a space first."""
    line = one_line(text).replace("$", r"\$")
    return f" {line}" if line.startswith("_") else line


LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    "·": r"\textperiodcentered{}",
    "×": r"$\times$",
    "–": "--",
    "—": "---",
    "−": "-",
    "÷": r"$\div$",
    "…": r"\dots{}",
}


def latex_text(text: object) -> str:
    """Text for LaTeX: one line (a blank line would end a table cell's paragraph), specials escaped, and any other
    character outside printable ASCII as `?` (pdflatex stops on a Unicode character it has no glyph for)."""
    return "".join(LATEX_ESCAPES.get(char, char if " " <= char <= "~" else "?") for char in one_line(text))
