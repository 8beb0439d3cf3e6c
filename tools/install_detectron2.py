"""Install a working detectron2 into the current Python environment.

detectron2 is not published on PyPI under its own name. ``pb1-detectron2==0.6`` is: its
sdist carries detectron2's Python package (a 2022 snapshot that includes FCOS) but not the
C++ sources (``detectron2/layers/csrc``), so its own ``setup.py`` fails while compiling.
This script builds it with the C++ extension turned off; ``tkd_d2.compat`` then makes the
few modules that import ``detectron2._C`` importable and gives the ops a clear error.

If a detectron2 that imports is already installed (e.g. upstream built from source with its
extension), it is left alone.

    python tools/install_detectron2.py                  # the PyPI snapshot (setup.sh)
    python tools/install_detectron2.py --source DIR     # a detectron2 source tree (e.g. upstream
                                                        # main), always installed, no C++ extension,
                                                        # no dependencies (tools/check_upstream.sh)
"""
import argparse
import importlib.util
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SDIST = "pb1-detectron2==0.6"
EXT_LINE = "ext_modules=get_extensions(),"


def pip(*args):
    subprocess.check_call([sys.executable, "-m", "pip", *args])


def build_without_extension(src, *pip_args):
    """pip-install the detectron2 source tree ``src`` (modified in place) without its C++ extension."""
    setup_py = Path(src) / "setup.py"
    text = setup_py.read_text()
    if EXT_LINE not in text:
        sys.exit(f"[install_detectron2] {setup_py}: expected '{EXT_LINE}' not found; "
                 "the source changed, install detectron2 by hand")
    setup_py.write_text(text.replace(EXT_LINE, "ext_modules=[],"))
    pip("install", "--no-build-isolation", "--quiet", *pip_args, str(src))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", metavar="DIR", help="a detectron2 source tree to install instead")
    args = parser.parse_args()
    if args.source:
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "detectron2-src"
            shutil.copytree(args.source, src, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info"))
            build_without_extension(src, "--no-deps")
        print(f"[install_detectron2] installed detectron2 from {args.source} (Python only, no C++ extension)")
        return
    if importlib.util.find_spec("detectron2") is not None:
        print("[install_detectron2] detectron2 already installed; leaving it alone")
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pip("download", "--no-deps", "--no-build-isolation", "--quiet", SDIST, "-d", str(tmp))
        (archive,) = tmp.glob("*.tar.gz")
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        (src,) = [p for p in tmp.iterdir() if p.is_dir()]
        build_without_extension(src)
    print("[install_detectron2] installed detectron2 (Python only, no C++ extension)")


if __name__ == "__main__":
    main()
