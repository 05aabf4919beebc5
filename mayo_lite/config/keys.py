"""Key paths (`model.layers.conv0`, `a\\.b` for a key with a dot) and the one-line errors that name them.

Every other module of the config room speaks in key paths: tuples of keys, list indices as ints.
"""

import re

from mayo_lite.errors import ConfigError

_UNESCAPED_DOT = re.compile(r"(?<!\\)\.")


def parse_path(text):
    """Split `a.b\\.c.0` into `("a", "b.c", "0")`; raise ValueError on an empty segment."""
    segments = tuple(segment.replace("\\.", ".") for segment in _UNESCAPED_DOT.split(text))
    if "" in segments:
        raise ValueError(f"empty key in key path `{text}`")
    return segments


def is_dotted(key):
    """Whether a mapping key read from YAML stands for a key path rather than one key."""
    return isinstance(key, str) and "." in key


def format_path(path):
    """The inverse of parse_path, for messages: long paths are abbreviated, the top is `<top level>`."""
    if not path:
        return "<top level>"
    parts = [str(key).replace(".", "\\.") if isinstance(key, str) else str(key) for key in path]
    if len(parts) > 12:
        parts = parts[:6] + ["..."] + parts[-4:]
    return ".".join(parts)


def find_key(mapping, segment):
    """The key of `mapping` that `segment` names, or None: a path spells `1` for both "1" and 1."""
    if segment in mapping:
        return segment
    if isinstance(segment, str):
        try:
            number = int(segment)
        except ValueError:
            return None
        if number in mapping and not isinstance(_key_of(mapping, number), bool):
            return number
    return None


def _key_of(mapping, wanted):
    # `1 in {True: ...}` is true in Python; a path segment "1" must not name the key `true`.
    return next(key for key in mapping if key == wanted)


def list_index(items, segment):
    """The index into `items` that `segment` names, or None when it names none."""
    if isinstance(segment, bool):
        return None
    if isinstance(segment, int):
        index = segment
    elif isinstance(segment, str) and segment.isascii() and segment.isdigit():
        index = int(segment)
    else:
        return None
    return index if 0 <= index < len(items) else None


def describe(value):
    """What a value is, for messages that say why a path cannot go through it."""
    if isinstance(value, dict):
        keys = [str(key) for key in value]
        shown = ", ".join(keys[:12]) + (", ..." if len(keys) > 12 else "")
        return f"has keys: {shown}" if keys else "is an empty mapping"
    if isinstance(value, list):
        return f"is a list of {len(value)} items"
    if value is None:
        return "is null"
    return f"is a {type(value).__name__}, not a mapping or list"


def located_error(*parts):
    """A ConfigError whose message is `file: key.path: what went wrong` on one line.

    Parts that are None or empty are left out (a key that no file set has no file to name).
    """
    message = ": ".join(shorten(str(part)) for part in parts if part)
    return ConfigError(message.replace("\r", "\\r").replace("\n", "\\n"))


MAX_PART = 240


def shorten(text, limit=MAX_PART):
    """`text` cut to about `limit` characters (an error line must not echo a 10 MB value)."""
    return text if len(text) <= limit else f"{text[:limit - 40]}... ({len(text):,} characters)"
