"""Describe the machine and the code a result was measured with, so every figure says where it came from."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from pathlib import Path

import torch

import dynrec

SOURCE_ROOT = Path(__file__).resolve().parent.parent  # the checkout, when dynrec runs from one


@functools.cache
def cpu_fields() -> dict[str, str]:
    """The first CPU's fields in /proc/cpuinfo (empty where there is none); read once per process."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    return cpu_fields().get("model name") or platform.processor() or "unknown"


def cpu_id() -> str:
    """Vendor, family, model and stepping: tells CPU generations apart where a VM masks the model name (the
    same build and seed can round differently on another generation's kernels)."""
    f = cpu_fields()
    parts = [f.get("vendor_id", "")] + [f"{k} {f[k]}" for k in ("cpu family", "model", "stepping") if k in f]
    return " ".join(p for p in parts if p) or "unknown"


@functools.cache
def code_version() -> dict:
    """dynrec's version, and when it runs from a git checkout the commit and whether dynrec/ has uncommitted
    changes: a cached run keeps the code it was trained with, which may be older than the checkout's."""
    info: dict = {"version": dynrec.__version__}
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", "-C", str(SOURCE_ROOT), *args], capture_output=True, text=True,
                                  timeout=5, check=True).stdout.strip()

        info["commit"] = git("rev-parse", "HEAD")
        info["dirty"] = bool(git("status", "--porcelain", "--", "dynrec"))
    except (OSError, subprocess.SubprocessError):  # not a checkout, or no git: the version alone
        pass
    return info


def machine_info() -> dict:
    """The CPU, cores, threads, torch and Python versions, the platform, the GPU if any, and dynrec's code."""
    info = {
        "cpu": cpu_model(),
        "cpu_id": cpu_id(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the SIMD level torch's kernels dispatch to
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": str(torch.__version__),  # a plain str: a TorchVersion would not load with weights_only
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    info["dynrec"] = code_version()
    return info


def trained_with(*results: dict) -> str:
    """The dynrec commit(s) that trained these runs, short and '+'-joined when they differ ('-dirty' for
    uncommitted changes under dynrec/, 'unrecorded' for results older than code_version): every training
    session of a resumed run counts, so rows name all the code behind their numbers."""
    names: list[str] = []
    for result in results:
        for session in result.get("sessions") or [{"machine": result.get("machine", {})}]:
            code = session.get("machine", {}).get("dynrec", {})
            name = f"{code['commit'][:8]}{'-dirty' if code.get('dirty') else ''}" if "commit" in code else "unrecorded"
            if name not in names:
                names.append(name)
    return "+".join(names)
