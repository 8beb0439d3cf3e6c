"""The one place that adapts to the detectron2 build at hand.

The PyPI snapshot of detectron2 (``pb1-detectron2==0.6``) installs without its C++ extension
and predates current Pillow / setuptools / torch. Each shim below is a no-op where the
installed detectron2 (or its dependency) does not need it, and none edits installed files:

* ``detectron2._C`` missing → a stand-in module whose every op raises :class:`MissingCExtensionError`
  naming the op, so ``detectron2.layers`` and ``detectron2.evaluation`` import. Nothing this
  project uses needs ``_C``: evaluation runs pycocotools' pure-Python ``COCOeval``.
* ``PIL.Image.LINEAR`` (removed in Pillow 10, used as a default argument in
  ``detectron2.data.transforms``) → alias of ``PIL.Image.BILINEAR`` (the same filter).
* ``pkg_resources`` (gone from current setuptools, imported by ``detectron2.model_zoo``) →
  a minimal stand-in with ``resource_filename`` backed by ``importlib.resources``.
* ``RetinaNetHead`` probes its norm type with ``get_norm(norm, 1)``, which fails for "GN"
  (32 groups do not divide 1 channel) → that probe gets a 32-channel norm instead.
* ``create_ddp_model`` passes ``device_ids=[local_rank]`` even for a CPU model, which
  DistributedDataParallel refuses → for CPU models it passes ``device_ids=None``.
* ``detectron2.engine.launch`` asserts CUDA → :func:`tkd_d2.engine.launch.launch` runs
  the same workers on CPU with the gloo backend.

:func:`apply` is called by ``tkd_d2/__init__.py`` before anything imports detectron2.
"""
import importlib.util
import sys
import types
import warnings

__all__ = ["apply", "MissingCExtensionError", "HAS_C_EXTENSION", "applied_shims"]

HAS_C_EXTENSION = None  # set by apply(): whether detectron2._C is a real compiled extension
applied_shims = []  # names of the shims apply() installed, for `collect_env`-style reports


class MissingCExtensionError(RuntimeError):
    """A detectron2 C++/CUDA op was called but detectron2 was built without its extension."""


class _MissingCExtension(types.ModuleType):
    """Stands in for ``detectron2._C``: importable, but every op raises a clear error.

    The build-information queries of ``detectron2.utils.collect_env`` answer truthfully
    instead, so ``default_setup`` can print its environment report."""

    __file__ = "<tkd_d2.compat stand-in for detectron2._C>"

    @staticmethod
    def get_compiler_version():
        return "none: detectron2 built without its C++ extension"

    @staticmethod
    def get_cuda_version():
        return "none: detectron2 built without its C++ extension"

    @staticmethod
    def has_cuda():
        return False

    def __getattr__(self, op_name):
        if op_name.startswith("__"):
            raise AttributeError(op_name)
        raise MissingCExtensionError(
            f"detectron2 op '_C.{op_name}' is not available: detectron2 was built without its "
            "C++ extension (the PyPI sdist pb1-detectron2 ships no C++ sources). tkd_d2 does not "
            "need it; to use this op, build detectron2 from source with its extension."
        )


def _shim_c_extension():
    global HAS_C_EXTENSION
    if "detectron2._C" in sys.modules:
        HAS_C_EXTENSION = not isinstance(sys.modules["detectron2._C"], _MissingCExtension)
        return
    try:
        HAS_C_EXTENSION = importlib.util.find_spec("detectron2._C") is not None
    except ModuleNotFoundError:  # detectron2 itself missing: nothing to adapt
        HAS_C_EXTENSION = False
        return
    if HAS_C_EXTENSION:
        return
    import detectron2

    stub = _MissingCExtension("detectron2._C")
    sys.modules["detectron2._C"] = stub
    detectron2._C = stub
    applied_shims.append("detectron2._C stand-in")


def _shim_pillow():
    from PIL import Image

    if not hasattr(Image, "LINEAR"):
        Image.LINEAR = Image.BILINEAR
        applied_shims.append("PIL.Image.LINEAR")


def _shim_pkg_resources():
    if "pkg_resources" in sys.modules or importlib.util.find_spec("pkg_resources") is not None:
        return
    from importlib import resources

    def resource_filename(package, resource):
        return str(resources.files(package).joinpath(resource))

    module = types.ModuleType("pkg_resources")
    module.resource_filename = resource_filename
    module.__doc__ = "tkd_d2.compat stand-in: only resource_filename (for detectron2.model_zoo)"
    sys.modules["pkg_resources"] = module
    applied_shims.append("pkg_resources.resource_filename")


def _shim_retinanet_norm_probe():
    try:
        from detectron2.modeling.meta_arch import retinanet
    except ImportError:
        return
    original = retinanet.get_norm
    if getattr(original, "_tkd_shim", False):
        return

    def get_norm(norm, out_channels):
        try:
            return original(norm, out_channels)
        except ValueError:
            if out_channels != 1:  # only the type probe is adapted
                raise
            return original(norm, 32)

    get_norm._tkd_shim = True
    retinanet.get_norm = get_norm
    applied_shims.append("RetinaNetHead GN type probe")


def _shim_cpu_ddp():
    try:
        from detectron2.engine import defaults
    except ImportError:
        return
    original = defaults.create_ddp_model
    if getattr(original, "_tkd_shim", False):
        return

    def create_ddp_model(model, *, fp16_compression=False, **kwargs):
        first = next(model.parameters(), None)
        if first is not None and first.device.type == "cpu" and "device_ids" not in kwargs:
            kwargs["device_ids"] = None
        return original(model, fp16_compression=fp16_compression, **kwargs)

    create_ddp_model._tkd_shim = True
    defaults.create_ddp_model = create_ddp_model
    applied_shims.append("create_ddp_model on CPU")


_APPLIED = False


def _quiet_library_warnings():
    # Deprecation chatter from inside detectron2/fvcore on today's torch; nothing a user can act on.
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r"torch\.meshgrid: in an upcoming release", category=UserWarning)


def apply():
    """Install every shim the current environment needs (idempotent)."""
    global _APPLIED
    if _APPLIED:
        return
    _quiet_library_warnings()
    _shim_pillow()
    _shim_pkg_resources()
    _shim_c_extension()
    _shim_retinanet_norm_probe()
    _shim_cpu_ddp()
    _APPLIED = True
