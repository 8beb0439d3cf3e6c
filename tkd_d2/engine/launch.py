"""detectron2's ``launch`` with a CPU path (gloo) for machines without CUDA.

With CUDA, or a detectron2 whose ``launch`` runs gloo workers itself, this is detectron2's
``launch``. The 0.6 snapshot asserts CUDA in every worker; there this module starts the
same workers on the CPU with gloo and detectron2's local process group
(:func:`tkd_d2.compat.create_local_process_group`), sharing the cores between them.
"""
import logging
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from detectron2.engine import launch as d2_launch
from detectron2.engine.launch import _find_free_port
from detectron2.utils import comm

from .. import compat

__all__ = ["launch", "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = timedelta(minutes=30)


def launch(main_func, num_processes_per_machine, num_machines=1, machine_rank=0,
           dist_url=None, args=(), timeout=DEFAULT_TIMEOUT):
    """Run ``main_func(*args)`` in ``num_processes_per_machine × num_machines`` processes.

    On CUDA machines this is detectron2's ``launch`` (one process per GPU, NCCL). On CPU
    machines the processes use gloo; ``dist_url`` "auto" picks a free localhost port.
    """
    if torch.cuda.is_available() or compat.d2_launch_runs_on_cpu():
        return d2_launch(main_func, num_processes_per_machine, num_machines, machine_rank,
                         dist_url, args=args, timeout=timeout)
    world_size = num_machines * num_processes_per_machine
    if world_size <= 1:
        return main_func(*args)
    if dist_url is None or dist_url == "auto":
        if num_machines != 1:
            raise ValueError("--dist-url auto works only on one machine; pass tcp://HOST:PORT")
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    mp.spawn(
        _cpu_worker,
        nprocs=num_processes_per_machine,
        args=(main_func, world_size, num_processes_per_machine, machine_rank, dist_url, args,
              timeout),
        daemon=False,
    )


def _cpu_worker(local_rank, main_func, world_size, procs_per_machine, machine_rank, dist_url,
                args, timeout):
    global_rank = machine_rank * procs_per_machine + local_rank
    try:
        dist.init_process_group(backend="gloo", init_method=dist_url, world_size=world_size,
                                rank=global_rank, timeout=timeout)
    except Exception:
        logging.getLogger(__name__).error("Process group URL: %s", dist_url)
        raise
    # Share the CPU cores between the workers instead of oversubscribing them.
    torch.set_num_threads(max(1, torch.get_num_threads() // procs_per_machine))
    compat.create_local_process_group(procs_per_machine, machine_rank, world_size)
    comm.synchronize()
    try:
        main_func(*args)
    finally:
        dist.destroy_process_group()
