"""The config tree (plain dicts, lists and scalars): merging, setting a key path, and where each path came from.

The loader builds trees, the Config merges them here, and the references module reads them.
"""

import copy

from mayo_lite.config.keys import describe, find_key, format_path, list_index


class Origins:
    """Which file or override last set each key path: a trie that mirrors the config tree.

    A node records an origin only where something was set; a path's origin is that of its nearest recorded
    ancestor, so a whole file merged into an empty place costs one record, not one per value.
    """

    __slots__ = ("here", "children")

    def __init__(self, here=None):
        self.here = here
        self.children = {}

    def child(self, key):
        node = self.children.get(key)
        if node is None:
            node = self.children[key] = Origins()
        return node

    def reset(self, origin):
        """Record that `origin` replaced this path's whole value; what was recorded below it no longer holds."""
        self.here = origin
        self.children = {}

    def copy(self):
        twin = Origins(self.here)
        twin.children = {key: node.copy() for key, node in self.children.items()}
        return twin

    def lookup(self, path):
        """The origin of `path`, or None when nothing on the way down recorded one."""
        node, found = self, self.here
        for segment in path:
            key = find_key(node.children, segment)
            if key is None:
                break
            node = node.children[key]
            found = node.here or found
        return found


def merge_into(base, overlay, origins=None, origin=None, _parent=None):
    """Merge mapping `overlay` into mapping `base` in place: mappings merge key by key, anything else replaces.

    An object spec whose `type` changes is replaced whole, not merged: a cosine schedule layered with an exponential
    one must not keep the cosine's arguments. A layer spec (a mapping in a `layers` mapping) is the exception: a
    gated model changes `convolution` to `gated_convolution` and keeps the kernel size, padding and normaliser.
    Values taken from `overlay` are deep-copied, so the two trees never share a mutable part.
    """
    for key, value in overlay.items():
        slot = origins.child(key) if origins is not None else None
        existing = base.get(key)
        if isinstance(value, dict) and isinstance(existing, dict) and (
                _parent == "layers" or not _new_type(existing, value)):
            merge_into(existing, value, slot, origin, key)
        else:
            base[key] = copy.deepcopy(value)
            if slot is not None:
                slot.reset(origin)
    return base


def _new_type(existing, value):
    return "type" in value and "type" in existing and value["type"] != existing["type"]


def merge(base, overlay):
    """The merge of two mappings as a new mapping; neither argument changes."""
    return merge_into(copy.deepcopy(base), overlay)


class PathError(ValueError):
    """A key path that cannot be set; the caller names the file or argument."""


def set_path(tree, path, value, origins, origin):
    """Set `path` in `tree` to `value` (replacing, not merging), creating missing mappings on the way.

    A list on the way is indexed by an existing index only; a scalar on the way is an error, since silently
    replacing it with a mapping would lose the user's value.
    """
    node, slot = tree, origins
    for depth, segment in enumerate(path):
        last = depth == len(path) - 1
        if isinstance(node, dict):
            key = find_key(node, segment)
            if key is None:
                key = segment
                if not last:
                    node[key] = {}
                    slot.child(key).reset(origin)
        elif isinstance(node, list):
            key = list_index(node, segment)
            if key is None:
                where = format_path(path[: depth + 1])
                raise PathError(f"{where}: no such index ({format_path(path[:depth])} {describe(node)})")
        else:
            raise PathError(f"cannot set {format_path(path)}: {format_path(path[:depth])} {describe(node)}")
        slot = slot.child(key)
        if last:
            node[key] = value
            slot.reset(origin)
        else:
            node = node[key]
