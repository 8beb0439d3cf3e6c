"""A config file's ``_BASE_`` chain as fvcore merges it, read as raw yaml: which file set a key."""
import os

import yaml

__all__ = ["yaml_files", "yaml_setting", "yaml_keys"]


def yaml_files(config_file):
    """``[(path, raw yaml dict)]`` of ``config_file`` and the files its ``_BASE_`` (a path or a
    list of paths) names, in fvcore's merge order: bases first, depth first; a later file wins."""
    with open(config_file) as f:
        raw = yaml.safe_load(f) or {}
    bases = raw.get("_BASE_") or []
    files = []
    for base in [bases] if isinstance(bases, str) else bases:
        base = os.path.expanduser(base)
        base = base if os.path.isabs(base) else os.path.join(os.path.dirname(config_file), base)
        files += yaml_files(base)
    return files + [(config_file, raw)]


def yaml_setting(config_file, keys):
    """The file of ``config_file``'s ``_BASE_`` chain whose value of ``keys`` wins the merge, or None."""
    for path, raw in reversed(yaml_files(config_file)):
        node = raw
        for k in keys:
            node = node.get(k) if isinstance(node, dict) else None
        if node is not None:
            return path
    return None


def yaml_keys(node, prefix=""):
    """The dotted leaf keys of a nested dict (a raw yaml, or a CfgNode)."""
    if not isinstance(node, dict):
        return {prefix[:-1]} if prefix else set()
    keys = set()
    for k, v in node.items():
        keys |= yaml_keys(v, f"{prefix}{k}.")
    return keys
