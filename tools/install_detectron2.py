"""Install a working detectron2 into the current Python environment.

detectron2 is not published on PyPI under its own name. ``pb1-detectron2==0.6`` is: its
sdist carries detectron2's Python package (a 2022 snapshot that includes FCOS) but not the
C++ sources (``detectron2/layers/csrc``), so its own ``setup.py`` fails while compiling.
This script builds it with the C++ extension turned off; ``tkd_d2.compat`` then makes the
few modules that import ``detectron2._C`` importable and gives the ops a clear error.

If a detectron2 that imports is already installed (e.g. upstream built from source with its
extension), it is left alone.
"""
import importlib.util
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SDIST = "pb1-detectron2==0.6"
EXT_LINE = "ext_modules=get_extensions(),"


def pip(*args):
    subprocess.check_call([sys.executable, "-m", "pip", *args])


def main():
    if importlib.util.find_spec("detectron2") is not None:
        print("[install_detectron2] detectron2 already installed; leaving it alone")
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # --no-build-isolation: the sdist's setup.py imports torch to compute its metadata.
        pip("download", "--no-deps", "--no-build-isolation", "--quiet", SDIST, "-d", str(tmp))
        (archive,) = tmp.glob("*.tar.gz")
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        (src,) = [p for p in tmp.iterdir() if p.is_dir()]
        setup_py = src / "setup.py"
        text = setup_py.read_text()
        if EXT_LINE not in text:
            sys.exit(f"[install_detectron2] {setup_py}: expected '{EXT_LINE}' not found; "
                     "the sdist changed, install detectron2 by hand")
        # Build without the C++ extension (its sources are not in the sdist).
        setup_py.write_text(text.replace(EXT_LINE, "ext_modules=[],"))
        pip("install", "--no-build-isolation", "--quiet", str(src))
    print("[install_detectron2] installed detectron2 (Python only, no C++ extension)")


if __name__ == "__main__":
    main()
