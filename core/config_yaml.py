"""Reading config YAML (profile files and ``--set`` values) so that no input can hang or crash the loader.

- aliases (``*name``) are refused: a 400-byte "billion laughs" file expands to 10^9 values;
- nesting deeper than :data:`MAX_DEPTH` is refused before the composer recurses;
- a file over :data:`MAX_FILE_BYTES` or a value over :data:`MAX_VALUE_BYTES` is refused unread;
- an integer of more than :data:`MAX_INT_DIGITS` digits is refused (Python's own limit raised a traceback);
- a key given twice is refused (plain YAML keeps the last one silently).

Each refusal is one :class:`ConfigError` sentence naming where.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

MAX_DEPTH = 32
MAX_FILE_BYTES = 1 << 20
MAX_VALUE_BYTES = 64 * 1024
MAX_INT_DIGITS = 30


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range."""


def _where(mark) -> str:
    return f"{mark.name}, line {mark.line + 1}" if mark is not None else "the config"


class ConfigLoader(yaml.SafeLoader):
    """SafeLoader without aliases, with a depth bound, bounded integers and unique keys."""

    _depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ConfigError(f"{_where(event.start_mark)}: YAML aliases (*{event.anchor}) are not allowed in a config; "
                              "write the value out")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ConfigError(f"{_where(self.peek_event().start_mark)}: the config nests deeper than {MAX_DEPTH} levels; "
                                  "a config is a few sections of plain values")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_yaml_int(self, node):
        if len(re.sub(r"[^0-9a-fA-F]", "", node.value)) > MAX_INT_DIGITS:
            raise ConfigError(f"{_where(node.start_mark)}: the integer {node.value[:20]}... has {len(node.value)} digits; "
                              f"no setting needs more than {MAX_INT_DIGITS}")
        return super().construct_yaml_int(node)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"config key '{key}' appears twice ({key_node.start_mark.name}, line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep)


ConfigLoader.add_constructor("tag:yaml.org,2002:int", ConfigLoader.construct_yaml_int)


def _yaml_syntax(err: yaml.YAMLError, where: str) -> ConfigError:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    at = f"{where}, line {mark.line + 1}, column {mark.column + 1}" if mark else where
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return ConfigError(f"{at}: YAML syntax error ({problem}); fix that line")


def load_file(path: Path) -> Any:
    """A profile file's tree (refusals above)."""
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ConfigError(f"config file {path} is {size} bytes; a config over {MAX_FILE_BYTES} bytes is not read")
    with open(path, encoding="utf-8") as fh:
        try:
            return yaml.load(fh, Loader=ConfigLoader)
        except yaml.YAMLError as err:
            raise _yaml_syntax(err, str(path)) from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {path} is not UTF-8 text") from None


def load_value(text: str, override: str) -> Any:
    """One ``--set`` value (refusals above)."""
    if len(text.encode("utf-8", "surrogateescape")) > MAX_VALUE_BYTES:
        raise ConfigError(f"override '{override[:60]}...': the value is over {MAX_VALUE_BYTES} bytes; no setting needs that")
    try:
        return yaml.load(text, Loader=ConfigLoader)
    except ConfigError as err:
        raise ConfigError(f"override '{override[:60]}': {str(err).removeprefix('<unicode string>, line 1: ')}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"override '{override[:60]}': the value is not valid YAML ({getattr(err, 'problem', None) or err}); "
                          "quote it or fix its brackets") from None
