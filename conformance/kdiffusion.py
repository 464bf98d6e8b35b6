"""k-diffusion without its heavy package `__init__`: `load_sampling()` returns `k_diffusion.sampling`, and
`KDIFFUSION` maps each of its sampler functions to the registry sampler (and options) it claims to be.

k-diffusion 0.1.1's `k_diffusion/__init__.py` imports clean-fid, CLIP, scikit-image and more; `sampling.py` itself
needs only torch, scipy, torchdiffeq, torchsde, tqdm and `k_diffusion.utils`, which imports
`torchvision.transforms.functional` at module level (only for image helpers that sampling never calls). The loader
imports `sampling.py` from the installed package's folder under its own name, with a stand-in for torchvision when
it is absent. Install with `pip install --no-deps k-diffusion==0.1.1.post1 torchdiffeq torchsde`.
"""

import importlib.machinery
import importlib.util
import inspect
import sys
import types

# k_diffusion.sampling function -> (registry name, registry options it equals, k-diffusion keyword arguments).
# Where the reference has a variant="k-diffusion" that reproduces k-diffusion's function exactly, it is used (when
# the installed reference has it); otherwise the row compares k-diffusion with the paper's form and shows the
# departure.
KDIFFUSION: dict[str, tuple[str, dict[str, object], dict[str, object]]] = {
    "sample_euler": ("euler", {}, {}),
    "sample_euler_ancestral": ("euler_ancestral", {}, {}),
    "sample_heun": ("heun", {}, {}),
    "sample_dpm_2": ("dpm2", {}, {}),
    "sample_dpm_2_ancestral": ("dpm2_ancestral", {}, {}),
    "sample_lms": ("lms", {}, {}),
    "sample_dpm_fast": ("dpm_solver_fast", {}, {}),
    "sample_dpm_adaptive": ("dpm_solver_adaptive", {}, {}),
    "sample_dpmpp_2s_ancestral": ("dpmpp_2s_ancestral", {}, {}),
    "sample_dpmpp_sde": ("dpmpp_sde", {}, {}),
    "sample_dpmpp_2m": ("dpmpp_2m", {}, {}),
    "sample_dpmpp_2m_sde": ("dpmpp_2m_sde", {}, {}),
    "sample_dpmpp_3m_sde": ("dpmpp_3m_sde", {}, {}),
}
# k-diffusion has no lower-order final steps, and its variant (where the reference has one) is named so.
_K_OPTIONS = {"lower_order_final": False, "variant": "k-diffusion"}


def registry_options(k_name: str, info) -> dict:
    """The registry options under which `info`'s reference sampler claims to equal k-diffusion's `k_name`: the
    mapping's own, plus no lower-order final steps and variant="k-diffusion" where the reference has them."""
    params = inspect.signature(info.fn).parameters
    extra = {k: v for k, v in _K_OPTIONS.items() if k in params}
    return {**extra, **KDIFFUSION.get(k_name, (None, {}, {}))[1]}


def _torchvision_stub():
    """Stand-ins for the torchvision modules `k_diffusion.utils` imports at module level (never used by sampling)."""
    tv = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    tv.transforms, transforms.functional = transforms, functional
    return {"torchvision": tv, "torchvision.transforms": transforms, "torchvision.transforms.functional": functional}


def load_sampling():
    """`k_diffusion.sampling` as a module, without running `k_diffusion/__init__.py` (see the module docstring)."""
    if "k_diffusion.sampling" in sys.modules:
        return sys.modules["k_diffusion.sampling"]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "k-diffusion is not installed: pip install --no-deps k-diffusion==0.1.1.post1 torchdiffeq torchsde"
        )
    folder = list(spec.submodule_search_locations)[0]
    if "k_diffusion" not in sys.modules:  # an empty package object, so that `from . import utils` resolves
        package = types.ModuleType("k_diffusion")
        package.__path__ = [folder]
        package.__spec__ = importlib.machinery.ModuleSpec("k_diffusion", None, is_package=True)
        package.__spec__.submodule_search_locations = [folder]  # find_spec("k_diffusion") still finds the files
        sys.modules["k_diffusion"] = package
    stubs = {}
    try:
        importlib.import_module("torchvision.transforms.functional")
    except Exception:  # absent, or a torchvision build that does not import beside this torch
        stubs = _torchvision_stub()
        saved = {name: sys.modules.get(name) for name in stubs}
        sys.modules.update(stubs)
    try:
        return importlib.import_module("k_diffusion.sampling")
    finally:
        # the stand-ins served `k_diffusion.utils`' import only: other packages (diffusers) probe torchvision later
        for name in stubs:
            if saved[name] is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = saved[name]


def sampler_functions() -> dict:
    """{name: function} of every `sample_*` function in k_diffusion.sampling."""
    sampling = load_sampling()
    return {name: fn for name, fn in vars(sampling).items() if name.startswith("sample_") and callable(fn)}
