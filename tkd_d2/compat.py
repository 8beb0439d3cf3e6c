"""The one place that adapts to the detectron2 build at hand.

The PyPI snapshot of detectron2 (``pb1-detectron2==0.6``) installs without its C++ extension
and predates current Pillow / setuptools / torch. ``import tkd_d2`` calls :func:`apply`, which
runs the shims listed in ``SHIMS`` (in that order) before anything imports detectron2. The
shims that are needed rebind module globals of detectron2 or its dependencies *in memory*
(never editing installed files), and each is a no-op where the build at hand does not need
it; ``applied_shims`` names the ones installed. The shims:

* ``detectron2._C`` missing → a stand-in module whose every op raises :class:`MissingCExtensionError`
  naming the op, so ``detectron2.layers`` and ``detectron2.evaluation`` import; the same
  stand-in answers ``torch.ops.detectron2.*`` (how upstream calls its rotated ops). Nothing
  this project uses needs ``_C``: evaluation runs pycocotools' pure-Python ``COCOeval``.
* ``PIL.Image.LINEAR`` (removed in Pillow 10, used as a default argument in the snapshot's
  ``detectron2.data.transforms``; upstream uses BILINEAR) → alias of ``PIL.Image.BILINEAR``
  (the same filter), only where detectron2's source names it.
* ``pkg_resources`` (gone from current setuptools, imported by ``detectron2.model_zoo``) →
  a minimal stand-in with ``resource_filename`` backed by ``importlib.resources``.
* ``RetinaNetHead`` probes its norm type with ``get_norm(norm, 1)``, which fails for "GN"
  (32 groups do not divide 1 channel) → that probe gets a 32-channel norm instead, only
  where building a GN head fails (the snapshot; upstream probes with 32).
* ``create_ddp_model`` passes ``device_ids=[local_rank]`` even for a CPU model, which
  DistributedDataParallel refuses → for CPU models it passes ``device_ids=None``.

Capabilities the rest of the project asks about here (nothing else probes the build):

* ``HAS_C_EXTENSION``: detectron2's C++ ops (the fast COCO evaluator needs them).
* :func:`d2_launch_runs_on_cpu`: whether ``detectron2.engine.launch`` starts CPU (gloo)
  workers; the 0.6 snapshot asserts CUDA, so :func:`tkd_d2.engine.launch.launch` starts them.
* :func:`create_local_process_group`: detectron2's per-machine process group, through
  ``comm.create_local_process_group`` where the build has it (the snapshot has not: there
  it is set the way the snapshot's own launch sets it).
"""
import importlib.util
import sys
import types
import warnings

__all__ = [
    "apply",
    "MissingCExtensionError",
    "HAS_C_EXTENSION",
    "applied_shims",
    "d2_launch_runs_on_cpu",
    "create_local_process_group",
]

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
            f"detectron2 op '{op_name}' is not available: detectron2 was built without its "
            "C++ extension. tkd_d2 does not need it; to use this op, build detectron2 from "
            "source with its extension (the PyPI sdist pb1-detectron2 has no C++ sources)."
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
    # upstream calls its registered ops directly (torch.ops.detectron2.nms_rotated, ...)
    import torch

    torch.ops.detectron2 = _MissingCExtension("torch.ops.detectron2")
    applied_shims.append("torch.ops.detectron2 stand-in")


def _detectron2_source(relative_path):
    """The text of a detectron2 source file (without importing it), or "" if absent."""
    try:
        spec = importlib.util.find_spec("detectron2")
    except (ModuleNotFoundError, ValueError):
        return ""
    for folder in (spec.submodule_search_locations or []) if spec else []:
        try:
            with open(f"{folder}/{relative_path}", encoding="utf-8") as f:
                return f.read()
        except OSError:
            continue
    return ""


def _shim_pillow():
    from PIL import Image

    # needed only where detectron2 still names the removed alias (the snapshot; not upstream)
    if not hasattr(Image, "LINEAR") and "Image.LINEAR" in _detectron2_source("data/transforms/transform.py"):
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


def _retinanet_head_takes_group_norm(retinanet):
    """Whether this build's RetinaNetHead can be built with GN (upstream probes the norm type
    with 32 channels; the snapshot with 1, which GN refuses)."""
    from detectron2.layers import ShapeSpec

    try:
        retinanet.RetinaNetHead(input_shape=[ShapeSpec(channels=32)], num_classes=1,
                                num_anchors=1, conv_dims=[32], norm="GN")
    except ValueError:
        return False
    return True


def _shim_retinanet_norm_probe():
    try:
        from detectron2.modeling.meta_arch import retinanet
    except ImportError:
        return
    original = retinanet.get_norm
    if getattr(original, "_tkd_shim", False) or _retinanet_head_takes_group_norm(retinanet):
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


# Every shim, in the order apply() runs them (each checks whether it is needed).
SHIMS = (
    _quiet_library_warnings,
    _shim_pillow,
    _shim_pkg_resources,
    _shim_c_extension,
    _shim_retinanet_norm_probe,
    _shim_cpu_ddp,
)


def apply():
    """Install every shim the current environment needs (idempotent)."""
    global _APPLIED
    if _APPLIED:
        return
    for shim in SHIMS:
        shim()
    _APPLIED = True


def d2_launch_runs_on_cpu():
    """Whether detectron2's ``launch`` starts gloo workers when there is no GPU (upstream
    does; the 0.6 snapshot asserts CUDA in every worker)."""
    import inspect

    from detectron2.engine import launch as launch_module

    try:
        source = inspect.getsource(launch_module._distributed_worker)
    except (AttributeError, OSError, TypeError):
        return False
    return "gloo" in source.lower()


def create_local_process_group(procs_per_machine, machine_rank, world_size):
    """Create detectron2's local (per-machine) process group in a worker process."""
    import torch.distributed as dist
    from detectron2.utils import comm

    if hasattr(comm, "create_local_process_group"):
        comm.create_local_process_group(procs_per_machine)
        return
    # The snapshot: comm reads a module global that its own launch sets like this.
    assert comm._LOCAL_PROCESS_GROUP is None
    for i in range(world_size // procs_per_machine):
        ranks_on_i = list(range(i * procs_per_machine, (i + 1) * procs_per_machine))
        group = dist.new_group(ranks_on_i)
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
