"""What this unet was built with and what it finds at run time (``unet.info()``, ``unet info``).

Build facts come from the compiled module (``unet._C.info()``); run-time facts
(GPUs, optional packages) are looked up here. Optional packages are checked
with ``importlib.util.find_spec`` and their installed metadata, so asking
about torch or mpi4py never imports them; only CuPy is imported, because
counting GPUs needs it (and ``unet.backend`` caches it for later use anyway).
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import platform

import numpy as np

from . import _C, backend
from ._version import __version__

OPTIONAL_PACKAGES = ("cupy", "mpi4py", "ml_dtypes", "safetensors", "torch", "matplotlib")
_BUILD_KEYS = ("version", "cuda_compiled", "cuda_archs", "cpu_features", "openmp_threads", "cuda_devices")


def info(verbose: bool = False) -> dict:
    """A dict describing the build and the machine; ``verbose=True`` also prints it as a report."""
    build = _C.info() if hasattr(_C, "info") else {}
    report = {
        "version": __version__,
        "kernels_version": build.get("version"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": np.__version__,
        "cuda_compiled": bool(build.get("cuda_compiled", False)),
        "cuda_archs": _as_list(build.get("cuda_archs")),
        "cpu_features": _as_list(build.get("cpu_features")),
        "openmp_threads": build.get("openmp_threads"),
        "cuda_devices_seen_by_kernels": build.get("cuda_devices"),
        "build_other": {k: v for k, v in build.items() if k not in _BUILD_KEYS},  # newer binding keys
        "gpus": _gpus(),
        "packages": _package_versions(OPTIONAL_PACKAGES),
    }
    if verbose:
        print(format_info(report))
    return report


def format_info(report: dict) -> str:
    """The report as aligned ``key: value`` lines."""
    cuda = ("yes, for " + ", ".join("sm_" + a.removeprefix("sm_") for a in report["cuda_archs"])
            if report["cuda_compiled"] else "no (CPU kernels only)")
    gpus = [f"{g['index']}: {g['name']} (sm_{g['compute_capability']}, {g['memory_gib']:.1f} GiB)"
            for g in report["gpus"]]
    rows = [
        ("unet", report["version"] + (f" (kernels {report['kernels_version']})"
                                      if report["kernels_version"] not in (None, report["version"]) else "")),
        ("python", f"{report['python']} on {report['platform']}"),
        ("numpy", report["numpy"]),
        ("CUDA kernels", cuda),
        ("CPU features", ", ".join(report["cpu_features"]) or "none reported"),
        ("OpenMP threads", report["openmp_threads"] if report["openmp_threads"] is not None else "unknown"),
        ("GPUs (CuPy)", "; ".join(gpus) or "none"),
    ]
    seen = report["cuda_devices_seen_by_kernels"]
    if seen is not None:
        rows.append(("GPUs (kernels)", (", ".join(map(str, seen)) or "none") if isinstance(seen, list) else seen))
    rows += [(key.replace("_", " "), value) for key, value in report["build_other"].items()]
    rows.append(("packages", ""))
    rows += [(f"  {name}", version or "not installed") for name, version in report["packages"].items()]
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key:<{width}}  {value}".rstrip() for key, value in rows)


def _as_list(value) -> list:
    """The binding may give a list or a ';'/','-separated string; normalise to a list of strings."""
    if not value:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.replace(",", ";").split(";") if v.strip()]
    return [str(v) for v in value]


def _gpus() -> list:
    cp = backend.cupy_module()
    if cp is None:
        return []
    gpus = []
    for index in range(cp.cuda.runtime.getDeviceCount()):
        props = cp.cuda.runtime.getDeviceProperties(index)
        name = props["name"]
        gpus.append({"index": index,
                     "name": name.decode() if isinstance(name, bytes) else str(name),
                     "compute_capability": f"{props['major']}{props['minor']}",
                     "memory_gib": props["totalGlobalMem"] / 2 ** 30})
    return gpus


def _package_versions(modules) -> dict:
    """``{module: installed version}``, None for a module that is not importable."""
    # CuPy ships as cupy-cuda12x etc.: map import names to the distributions providing them
    distributions = importlib.metadata.packages_distributions()
    versions = {}
    for module in modules:
        versions[module] = None
        if importlib.util.find_spec(module) is None:
            continue
        versions[module] = "installed"
        for dist in distributions.get(module, [module]):
            try:
                versions[module] = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return versions
