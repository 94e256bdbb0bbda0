"""Set one label of one function in a stack.yml, or add whole functions; ruamel.yaml's round trip keeps
comments, key order, quoting and blank lines (PyYAML drops comments). It dumps with one indentation,
guessed from the file, so only a file indented inconsistently would come back changed elsewhere (reindented).
"""

from __future__ import annotations

import copy
import io
import json
import os
import tempfile
from pathlib import Path

from ruamel.yaml import YAML, YAMLError
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, SingleQuotedScalarString
from ruamel.yaml.util import load_yaml_guess_indent


def _tail(node, key):
    """The comment slot of node[key]'s deepest last entry: ruamel keeps the lines that close a block there."""
    while isinstance(node[key], (CommentedMap, CommentedSeq)) and len(node[key]):
        node, key = node[key], (next(reversed(node[key])) if isinstance(node[key], dict) else len(node[key]) - 1)
    return node.ca.items.setdefault(key, [None] * 4), 2 if isinstance(node, CommentedMap) else 0


def _put(mapping: CommentedMap, key: str, value) -> None:
    """mapping[key] = value (a new last entry, or over a null one), still followed by the blank and
    comment lines that closed the block, which would otherwise stay above it."""
    items, i = _tail(mapping, key if key in mapping else next(reversed(mapping))) if mapping else ([None], 0)
    mapping[key] = value
    token = items[i]
    head, _, rest = token.value.partition("\n") if token else ("", "", "")
    if rest:
        new, j = _tail(mapping, key)
        new[j] = copy.copy(token)
        new[j].value = "\n" + rest
        token.value = head + "\n"  # an end-of-line comment stays on its line
        items[i] = token if head else None


def _load(text: str):
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 1 << 16  # never fold a long value onto a second line
    try:
        doc, sequence, offset = load_yaml_guess_indent(text, yaml=yaml)
    except YAMLError as e:
        raise ValueError(f"not valid YAML: {e}") from e
    if not isinstance(doc, CommentedMap) or not isinstance(doc.get("functions"), CommentedMap):
        raise ValueError("not a stack.yml: no top-level 'functions:' mapping")
    return yaml, doc, sequence, offset


def _indent(text: str) -> int:
    return min((len(l) - len(l.lstrip(" ")) for l in text.splitlines()
                if l[:1] == " " and l.strip()[:1] not in ("", "#", "-")), default=2)


def _dump(text: str, yaml: YAML, doc: CommentedMap, sequence: int | None, offset: int | None) -> str:
    mapping = _indent(text)
    yaml.indent(mapping=mapping, sequence=sequence or mapping, offset=offset or 0)
    out = io.StringIO()
    yaml.dump(doc, out)
    return out.getvalue()


def set_label(text: str, function: str, key: str, value: str) -> str:
    """`text` with functions.<function>.labels.<key> set to the string `value`."""
    yaml, doc, sequence, offset = _load(text)
    fn = doc["functions"].get(function)
    if not isinstance(fn, CommentedMap):
        raise ValueError(f"function {function!r} is not in this stack.yml")
    labels = fn.get("labels")
    old = labels.get(key) if isinstance(labels, CommentedMap) else None
    if isinstance(old, str) and old == value:
        return text
    # OpenFaaS labels are strings: quoted, "4" or "true" is not read back as a number or a bool
    style = SingleQuotedScalarString if isinstance(old, SingleQuotedScalarString) else DoubleQuotedScalarString
    quoted = style(value)
    if labels is None:
        _put(fn, "labels", CommentedMap([(key, quoted)]))
    elif not isinstance(labels, CommentedMap):
        raise ValueError(f"labels of {function!r} are not a mapping")
    elif key in labels:
        labels[key] = quoted
    else:
        _put(labels, key, quoted)
    return _dump(text, yaml, doc, sequence, offset)


def _styled(value):
    """Plain data as ruamel nodes; a string YAML would read back as a number or a bool ("8", "true") is
    double-quoted, as the stack's labels and max_inflight are."""
    if isinstance(value, dict):
        return CommentedMap((k, _styled(v)) for k, v in value.items())
    if isinstance(value, list):
        return CommentedSeq(_styled(v) for v in value)
    if isinstance(value, str):
        try:
            read_back = YAML(typ="safe", pure=True).load(value)
        except YAMLError:  # "[x", "@x": not plain scalars, which ruamel quotes by itself
            return value
        if not isinstance(read_back, str):
            return DoubleQuotedScalarString(value)
    return value


def _plain(node):
    return json.loads(json.dumps(node))


def set_functions(text: str, functions: dict[str, dict], force: bool = False, comment: str = "") -> str:
    """`text` with each functions.<name> set to its spec (plain data). A new one is added at the end, after
    a blank line (and `comment` above the first); an existing one is left alone when equal, replaced in place
    with `force`, and otherwise refused with a ValueError naming it."""
    yaml, doc, sequence, offset = _load(text)
    entries = doc["functions"]
    clash = [name for name, spec in functions.items()
             if name in entries and _plain(entries[name]) != _plain(spec)]
    if clash and not force:
        raise ValueError(f"stack.yml already has different function(s) {', '.join(clash)}; "
                         "--force replaces them")
    first_new = True
    for name, spec in functions.items():
        if name in entries:
            if name in clash:
                entries[name] = _styled(spec)
            continue
        _put(entries, name, _styled(spec))
        entries.yaml_set_comment_before_after_key(name, before="\n" + (comment if first_new and comment else ""),
                                                  indent=_indent(text))
        first_new = False
    if not clash and first_new:
        return text
    return _dump(text, yaml, doc, sequence, offset)


def write_label(path: Path, function: str, key: str, value: str) -> bool:
    """Set the label in the file; False when it already had that value and the file was left alone."""
    return _rewrite(path, lambda text: set_label(text, function, key, value))


def write_functions(path: Path, functions: dict[str, dict], force: bool = False, comment: str = "") -> bool:
    """set_functions on the file; False when nothing changed and the file was left alone."""
    return _rewrite(path, lambda text: set_functions(text, functions, force, comment))


def _rewrite(path: Path, edit) -> bool:
    path = Path(path).resolve()  # through a symlink, the file it points at is the one to replace
    text = path.read_text()
    new = edit(text)
    if new == text:
        return False
    # a crash mid-write must not leave half a stack.yml: write a file beside it, then rename it over
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(new)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o7777)  # mkstemp creates it 0600
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return True
