"""Safe YAML to plain data with each key's line, and ${VAR} / ${VAR:-default} interpolation.

Only plain scalars, mappings and sequences are accepted (no tags, merge keys or alias bombs).
"""

from __future__ import annotations

import os
import re
from typing import Any

import yaml

from bkd_sweep.config.errors import StudyError

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_MAX_NODES = 100_000


def node_tree(node: yaml.Node, path: tuple, lines: dict[tuple, int], stack: set[int],
               counter: list[int]) -> Any:
    """Build plain data from a composed YAML node, recording each key's line.

    Aliases are followed (anchors are fine) but recursion and alias bombs are refused.
    """
    counter[0] += 1
    if counter[0] > _MAX_NODES:
        raise StudyError("too many YAML nodes (alias expansion?)", line=node.start_mark.line + 1)
    if id(node) in stack:
        raise StudyError("recursive YAML anchor", line=node.start_mark.line + 1)
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in (_MAP_TAG,
                                                                                    _SEQ_TAG):
        raise StudyError(f"YAML tag {node.tag!r} is not allowed", line=node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        stack.add(id(node))
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise StudyError("YAML merge keys (<<) are not supported",
                                 line=key_node.start_mark.line + 1)
            if not isinstance(key_node, yaml.ScalarNode):
                raise StudyError("mapping keys must be plain strings",
                                 line=key_node.start_mark.line + 1)
            key = str(_scalar(key_node))
            if key in out:
                raise StudyError(f"duplicate key {key!r}", line=key_node.start_mark.line + 1,
                                 field=".".join(map(str, path + (key,))))
            lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = node_tree(value_node, path + (key,), lines, stack, counter)
        stack.discard(id(node))
        return out
    if isinstance(node, yaml.SequenceNode):
        stack.add(id(node))
        items = [node_tree(item, path + (i,), lines, stack, counter)
                 for i, item in enumerate(node.value)]
        stack.discard(id(node))
        return items
    return _scalar(node, path)


def _scalar(node: yaml.Node, path: tuple = ()) -> Any:
    if node.tag == _TIMESTAMP_TAG and isinstance(node, yaml.ScalarNode) and not node.style:
        # YAML reads a bare 2024-01-01 as a date: no study value is one, text is meant
        raise StudyError(f"{node.value} reads as a date in YAML; quote it for text "
                         f"('{node.value}')", line=node.start_mark.line + 1,
                         field=".".join(map(str, path)) or None)
    if not isinstance(node, yaml.ScalarNode) or node.tag not in _SAFE_SCALAR_TAGS:
        raise StudyError(f"YAML tag {node.tag!r} is not allowed", line=node.start_mark.line + 1)
    return yaml.constructor.SafeConstructor().construct_object(node)


_SAFE_SCALAR_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null")}
_MAP_TAG, _SEQ_TAG = "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"


def protect_variables(text: str) -> tuple[str, dict[str, re.Match]]:
    """Swap each ${VAR} for a plain token before parsing.

    ``{root: ${BKD_DATA}/x}`` is not valid YAML (braces inside a flow mapping), yet it is the
    natural way to write a study; tokens keep lines intact and are swapped back in strings.
    """
    found: dict[str, re.Match] = {}

    def token(match: re.Match) -> str:
        key = f"BKDVAR{len(found)}X"
        found[key] = match
        return key

    return _VAR.sub(token, text), found


_TOKEN = re.compile(r"BKDVAR\d+X")


def interpolate(value: Any, variables: dict[str, re.Match], unresolved: set[str]) -> Any:
    if isinstance(value, dict):
        return {k: interpolate(v, variables, unresolved) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, variables, unresolved) for v in value]
    if not isinstance(value, str) or "BKDVAR" not in value:
        return value

    def sub(found: re.Match) -> str:
        match = variables.get(found.group(0))
        if match is None:
            return found.group(0)
        name, default = match.group(1), match.group(2)
        # ${VAR} reads the raw environment on purpose: any user variable, not only BKD_* ones.
        if os.environ.get(name):
            return os.environ[name]
        if default is not None:
            return default
        unresolved.add(name)
        return match.group(0)

    return _TOKEN.sub(sub, value)
