"""Set one label of one function in a stack.yml by editing lines, so comments, key order,
quoting and spacing stay as the author wrote them (PyYAML would drop comments on a round trip).

It understands the block-style mappings stack files are written in. Anything it
cannot edit safely (tabs, flow-style `labels: {...}`, a multi-line value)
raises ValueError. Every edit is checked by parsing the result: the document
must equal the old one with exactly that label changed.
"""

from __future__ import annotations

import copy
import json
import re

import yaml

_KEY = re.compile(r"""^(?P<indent> *)(?P<key>"[^"]*"|'[^']*'|[^\s#'"{\[][^#]*?)\s*:(?=\s|$)""")


def _content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _indent(line: str) -> int:
    if line[: len(line) - len(line.lstrip(" \t"))].count("\t"):
        raise ValueError("tabs in indentation: not editable line by line")
    return len(line) - len(line.lstrip(" "))


def _key(line: str) -> str | None:
    m = _KEY.match(line)
    if not m:
        return None
    key = m.group("key")
    return key[1:-1] if key[:1] in "\"'" else key


def _block_end(lines: list[str], start: int, indent: int) -> int:
    """Index after the block opened at `start`: the next content line indented <= indent."""
    for j in range(start + 1, len(lines)):
        if _content(lines[j]) and _indent(lines[j]) <= indent:
            return j
    return len(lines)


def _child(lines: list[str], start: int, end: int, name: str) -> tuple[int | None, int | None]:
    """(line index of key `name` directly inside lines[start:end], the children's indent)."""
    child_indent = None
    for j in range(start, end):
        if not _content(lines[j]):
            continue
        ind = _indent(lines[j])
        child_indent = ind if child_indent is None else child_indent
        if ind == child_indent and _key(lines[j]) == name:
            return j, child_indent
    return None, child_indent


def _last_content(lines: list[str], start: int, end: int) -> int:
    for j in range(end - 1, start - 1, -1):
        if _content(lines[j]):
            return j
    return start - 1


def _after_colon(line: str) -> str:
    m = _KEY.match(line)
    return line[m.end():].strip() if m else ""


def _quote(value: str, style: str = '"') -> str:
    # labels are strings in OpenFaaS; quoting keeps "4" or "true" from being read as a number or bool
    if style == "'":
        return "'" + value.replace("'", "''") + "'"
    return json.dumps(value)  # a JSON string is a valid YAML double-quoted scalar


def _replace_value(line: str, value: str) -> str:
    m = _KEY.match(line)
    rest = line[m.end():]
    newline = "\n" if rest.endswith("\n") else ""
    rest = rest.rstrip("\n")
    lead = rest[: len(rest) - len(rest.lstrip(" "))] or " "
    body = rest.lstrip(" ")
    if body[:1] in ("|", ">", "{", "[", "&", "*", "!"):
        raise ValueError(f"cannot edit this value line by line: {line.strip()!r}")
    if body[:1] in "\"'":
        q = body[0]
        close = body.find(q, 1)
        while q == "'" and close != -1 and body[close + 1: close + 2] == "'":  # '' escapes a quote
            close = body.find(q, close + 2)
        if close == -1:
            raise ValueError(f"unterminated quoted value: {line.strip()!r}")
        tail = body[close + 1:]
        style = q
    else:
        cut = re.search(r"\s+#", body)
        tail = body[cut.start():] if cut else ""
        style = '"'
    return line[: m.end()] + lead + _quote(value, style) + tail + newline


def set_label(text: str, function: str, key: str, value: str) -> str:
    """`text` with functions.<function>.labels.<key> set to the string `value`."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    top, _ = _child(lines, 0, len(lines), "functions")
    if top is None or _indent(lines[top]) != 0:
        raise ValueError("no top-level 'functions:' mapping")
    fn_line, _ = _child(lines, top + 1, _block_end(lines, top, 0), function)
    if fn_line is None:
        raise KeyError(f"function {function!r} not found under functions:")
    fn_indent = _indent(lines[fn_line])
    fn_end = _block_end(lines, fn_line, fn_indent)
    lab_line, field_indent = _child(lines, fn_line + 1, fn_end, "labels")
    step = (field_indent or fn_indent + 2) - fn_indent
    if lab_line is None:
        at = _last_content(lines, fn_line + 1, fn_end) + 1
        pad = " " * (fn_indent + step)
        lines[at:at] = [f"{pad}labels:\n", f"{pad}{' ' * step}{key}: {_quote(value)}\n"]
    else:
        inline = _after_colon(lines[lab_line])
        if inline and not inline.startswith("#"):
            raise ValueError(f"labels of {function!r} are not a block mapping; edit them by hand")
        lab_indent = _indent(lines[lab_line])
        lab_end = _block_end(lines, lab_line, lab_indent)
        line, label_indent = _child(lines, lab_line + 1, lab_end, key)
        if line is not None:
            lines[line] = _replace_value(lines[line], value)
        else:
            at = _last_content(lines, lab_line + 1, lab_end) + 1
            lines[at:at] = [f"{' ' * (label_indent or lab_indent + step)}{key}: {_quote(value)}\n"]
    out = "".join(lines)
    _check(text, out, function, key, value)
    return out


def _check(old: str, new: str, function: str, key: str, value: str) -> None:
    before, after = yaml.safe_load(old), yaml.safe_load(new)
    expected = copy.deepcopy(before)
    fn = expected["functions"][function]
    if fn.get("labels") is None:
        fn["labels"] = {}
    fn["labels"][key] = value
    if after != expected:
        raise ValueError(f"editing {function}.labels.{key} by lines would change more than that label; "
                         "edit the file by hand")
