"""JavaScript syntax check for published addon files (tree-sitter's JavaScript grammar).

A publish with a file that does not parse is refused with the file, line and column of the
first error, before anything is stored. Imports nothing of ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import tree_sitter_javascript
from tree_sitter import Language, Node, Parser


@dataclass(frozen=True)
class SyntaxProblem:
    """Where a file first fails to parse (1-based line and column)."""

    line: int
    column: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}: {self.reason}"


@cache
def _parser() -> Parser:
    return Parser(Language(tree_sitter_javascript.language()))


def check_syntax(source: bytes) -> SyntaxProblem | None:
    """The first syntax error of `source`, or None when it parses."""
    tree = _parser().parse(source)
    if not tree.root_node.has_error:
        return None
    node = _first_error(tree.root_node)
    if node is None:  # has_error without a node we can point at
        return SyntaxProblem(1, 1, "syntax error")
    row, col = node.start_point
    if node.is_missing:
        reason = f"missing {node.type!r}"
    else:
        text = source[node.start_byte : node.end_byte].decode(errors="replace").strip()
        reason = f"unexpected {text[:40]!r}" if text else "syntax error"
    return SyntaxProblem(row + 1, col + 1, reason)


def _first_error(node: Node) -> Node | None:
    """The error or missing node that starts first."""
    if node.is_error or node.is_missing:
        return node
    for child in node.children:
        if child.has_error or child.is_missing:
            found = _first_error(child)
            if found is not None:
                return found
    return None
