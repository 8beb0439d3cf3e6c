"""Atomic file writes: a reader (or a killed run) sees the old file or the new one, whole.

Every file the project writes that another step reads back (checkpoints, ``last_checkpoint``,
results JSON, reports, pipeline state) goes through :func:`atomic_write`.
"""
import json
import os

__all__ = ["atomic_write", "atomic_write_json", "atomic_torch_save", "is_partial_write", "TMP_MARKER"]

TMP_MARKER = ".tmp."  # a partial write of PATH is PATH + TMP_MARKER + pid


def is_partial_write(filename):
    """Whether ``filename`` is what a write killed half-way left behind."""
    return TMP_MARKER in os.path.basename(filename)


def atomic_write(path, data):
    """Write ``data`` to ``path`` atomically: ``str`` (UTF-8 text), ``bytes``, or a callable
    that writes to the binary file object it is given. The file is fsync'ed before the rename."""
    path = os.fspath(path)
    tmp = f"{path}{TMP_MARKER}{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def atomic_write_json(path, obj, indent=2, **kwargs):
    """``json.dump`` to ``path`` atomically."""
    return atomic_write(path, json.dumps(obj, indent=indent, **kwargs))


def atomic_torch_save(obj, path):
    """``torch.save`` to ``path`` atomically."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))
