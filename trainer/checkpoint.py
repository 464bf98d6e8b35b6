"""Checkpoints: `OUTPUT_DIR/checkpoint-STEP/`, written so that nothing already saved is ever lost.

Files (docs/architecture.md): `model.safetensors`, `ema.safetensors`, `optimizer.safetensors` + `optimizer.json`
(the AdamW state flattened to tensors plus its JSON skeleton; no pickle anywhere), `rng.safetensors` (torch
generator states as uint8 tensors) + `rng.json` (numpy's global state), `config.json`, `state.json` (step,
EMA updates, ...), and `manifest.json` (file names, sizes, sha256) written **last**.

A save writes every file into `OUTPUT_DIR/.tmp-checkpoint-STEP/`, fsyncs each file and the folder, renames
the folder to `checkpoint-STEP`, then writes the manifest (itself through a temporary file and a rename).
A checkpoint without a manifest that verifies is incomplete: `find_latest` skips it, and pruning
(`checkpoints_total_limit`) runs only after the new checkpoint is complete. A complete checkpoint of the same
step is never overwritten; an incomplete one is moved aside, not deleted.
"""

import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

MANIFEST = "manifest.json"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
# Compatibility on resume: these config entries must match the run being resumed.
RESUME_KEYS = ("model", "schedule", "parameterization", "data", "num_classes", "learned_variance")
_SLEEP_ENV = "DIFFSPEC_TEST_SAVE_SLEEP"  # test hook: seconds to sleep after each file of a save


def _fsync_file(path):
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def _test_pause():
    delay = float(os.environ.get(_SLEEP_ENV, "0") or 0)
    if delay > 0:
        time.sleep(delay)


def unwrap(model):
    """The bare module under DDP and torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def _state_tensors(module):
    return {k: v.detach().contiguous().cpu() for k, v in unwrap(module).state_dict().items()}


# ----------------------------------------------------------------------------------------------------------
# Optimizer state <-> (tensors, JSON)
# ----------------------------------------------------------------------------------------------------------


def flatten_optimizer(optimizer):
    """optimizer.state_dict() as ({"state.<param>.<name>": tensor}, JSON-able skeleton)."""
    sd = optimizer.state_dict()
    tensors, state = {}, {}
    for pid, entry in sd["state"].items():
        state[str(pid)] = {}
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{name}"] = value.detach().contiguous().cpu()
                state[str(pid)][name] = {"tensor": f"state.{pid}.{name}"}
            else:
                state[str(pid)][name] = {"value": value}
    return tensors, {"state": state, "param_groups": sd["param_groups"]}


def unflatten_optimizer(tensors, skeleton):
    state = {}
    for pid, entry in skeleton["state"].items():
        state[int(pid)] = {name: tensors[v["tensor"]] if "tensor" in v else v["value"] for name, v in entry.items()}
    # JSON turned tuples (betas) into lists; the optimizer built them as tuples.
    groups = [
        {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
        for g in skeleton["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


# ----------------------------------------------------------------------------------------------------------
# RNG state
# ----------------------------------------------------------------------------------------------------------


def _numpy_state_json():
    name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (the legacy global state is saved for exact resume)
    return {"name": name, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}


def _numpy_state_restore(d):
    np.random.set_state((d["name"], np.asarray(d["keys"], dtype=np.uint32), d["pos"], d["has_gauss"], d["cached"]))  # noqa: NPY002


def rng_tensors(generators):
    """Torch RNG states as uint8 tensors: the global CPU (and CUDA) generators and the named ones passed in."""
    out = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["torch_cuda"] = torch.cuda.get_rng_state()
    for name, gen in generators.items():
        out[f"gen_{name}"] = gen.get_state()
    return out


def restore_rng(tensors, numpy_state, generators):
    torch.set_rng_state(tensors["torch_cpu"])
    if "torch_cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["torch_cuda"])
    for name, gen in generators.items():
        key = f"gen_{name}"
        if key not in tensors:
            raise ValueError(f"checkpoint has no RNG state {key!r}: it was written by a different trainer version")
        gen.set_state(tensors[key])
    if numpy_state is not None:
        _numpy_state_restore(numpy_state)


# ----------------------------------------------------------------------------------------------------------
# Manifest
# ----------------------------------------------------------------------------------------------------------


def write_manifest(ckpt_dir):
    ckpt_dir = Path(ckpt_dir)
    files = {
        p.name: {"size": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(ckpt_dir.iterdir())
        if p.is_file() and p.name != MANIFEST and not p.name.endswith(".tmp")
    }
    tmp = ckpt_dir / (MANIFEST + ".tmp")
    _write_json(tmp, {"format": 1, "files": files})
    _fsync_file(tmp)
    os.replace(tmp, ckpt_dir / MANIFEST)
    _fsync_dir(ckpt_dir)


def _manifest_name(ckpt_dir, name):
    """A manifest entry must name a plain file directly inside the checkpoint: no folder part, no '..', not
    absolute, not a symlink."""
    if (
        not isinstance(name, str)
        or not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\x00" in name
        or os.path.isabs(name)
    ):
        raise ValueError(
            f"checkpoint {str(ckpt_dir)!r}: {MANIFEST} lists {name!r}: expected the name of a file "
            "directly inside the checkpoint (no folder, no '..', not absolute)"
        )
    path = Path(ckpt_dir) / name
    if path.is_symlink():
        raise ValueError(f"checkpoint {str(ckpt_dir)!r}: {name} is a symlink: a checkpoint holds its own files only")
    return path


def verify_manifest(ckpt_dir: str | Path) -> dict:
    """Raise ValueError naming what is wrong unless manifest.json is well formed, names only plain files inside
    the checkpoint, and every file it lists has its size and sha256. Returns the manifest."""
    ckpt_dir = Path(ckpt_dir)
    path = ckpt_dir / MANIFEST
    if not path.is_file() or path.is_symlink():
        raise ValueError(f"checkpoint {str(ckpt_dir)!r} has no {MANIFEST}: it is incomplete (an interrupted save?)")
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
        if not isinstance(files, dict) or not all(
            isinstance(m, dict) and isinstance(m.get("size"), int) and isinstance(m.get("sha256"), str)
            for m in files.values()
        ):
            raise TypeError("'files' must map each file name to its size and sha256")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"checkpoint {str(ckpt_dir)!r}: {MANIFEST} is corrupt ({err})") from None
    for name, meta in files.items():
        p = _manifest_name(ckpt_dir, name)
        if not p.is_file():
            raise ValueError(f"checkpoint {str(ckpt_dir)!r}: {name} is listed in {MANIFEST} but missing")
        if p.stat().st_size != meta["size"]:
            raise ValueError(
                f"checkpoint {str(ckpt_dir)!r}: {name} has {p.stat().st_size} bytes, "
                f"{MANIFEST} says {meta['size']} (truncated or corrupt)"
            )
        if _sha256(p) != meta["sha256"]:
            raise ValueError(f"checkpoint {str(ckpt_dir)!r}: {name} does not match its sha256 in {MANIFEST} (corrupt)")
    for required in ("config.json", "model.safetensors"):
        if required not in files:
            raise ValueError(f"checkpoint {str(ckpt_dir)!r}: {MANIFEST} does not list {required}")
    return manifest


def listed(ckpt_dir: str | Path, manifest: dict, name: str, *, required: bool = True) -> Path | None:
    """The path of `name` in a verified checkpoint, which the loader may read only if the manifest lists it.

    A file on disk that the manifest does not list is refused, not trusted; a missing optional file gives None.
    """
    path = Path(ckpt_dir) / name
    if name in manifest["files"]:
        return path
    if path.exists() or path.is_symlink():
        raise ValueError(
            f"checkpoint {str(ckpt_dir)!r}: {name} is not listed in {MANIFEST}: every file the loader "
            "reads must be listed (was it added after the save?)"
        )
    if required:
        raise ValueError(f"checkpoint {str(ckpt_dir)!r}: {MANIFEST} does not list {name}, which this load needs")
    return None


_MACHINE_KEYS = ("output_dir", "resume_from_checkpoint")  # paths of the training machine, never stored


def _portable_value(value):
    """A path-like string reduced to its last component: a data set given as /home/me/data.npz is 'data.npz'."""
    if isinstance(value, str) and ("/" in value or "\\" in value):
        return value.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or value
    return value


def portable_config(config: dict) -> dict:
    """The config as stored: nothing that names the training machine (no output or resume folder, data paths
    reduced to their file names). Resume compares configs in this form."""
    out = json.loads(json.dumps(config))
    train = out.get("train")
    if isinstance(train, dict):
        for key in _MACHINE_KEYS:
            train.pop(key, None)
        out["train"] = {k: _portable_value(v) for k, v in train.items()}
    data = out.get("data")
    if isinstance(data, dict) and "name" in data:
        data["name"] = _portable_value(data["name"])
    return out


def is_complete(ckpt_dir):
    try:
        verify_manifest(ckpt_dir)
        return True
    except ValueError:
        return False


def list_checkpoints(output_dir):
    """[(step, path)] of every checkpoint-STEP folder, by step."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = []
    for p in output_dir.iterdir():
        m = CHECKPOINT_RE.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found)


def find_latest(output_dir):
    """The checkpoint with the highest step whose manifest verifies, or None."""
    for _, path in reversed(list_checkpoints(output_dir)):
        if is_complete(path):
            return path
    return None


def resume_path(resume_from_checkpoint: str | None, output_dir: Path) -> Path | None:
    """The checkpoint --resume-from-checkpoint names: 'latest' is the newest complete one in output_dir (None when
    there is none yet, so the same command starts or continues a run); anything else must be a checkpoint folder."""
    if not resume_from_checkpoint:
        return None
    if resume_from_checkpoint == "latest":
        path = find_latest(output_dir)
        if path is None and any(output_dir.glob("checkpoint-*")):
            raise ValueError(f"--resume-from-checkpoint latest: no checkpoint in {str(output_dir)!r} verifies")
        return path
    path = Path(resume_from_checkpoint)
    if not path.is_dir():
        raise ValueError(f"--resume-from-checkpoint {str(path)!r}: no such checkpoint folder")
    return path


# ----------------------------------------------------------------------------------------------------------
# Save
# ----------------------------------------------------------------------------------------------------------


def save_checkpoint(
    output_dir,
    step,
    *,
    model,
    ema=None,
    optimizer=None,
    config,
    state=None,
    generators=None,
    total_limit=None,
    extra=None,
):
    """Write checkpoint-STEP atomically (see the module docstring) and prune; returns its path. `extra` maps a
    name to a dict of tensors written as NAME.safetensors (read back with `load_tensors`)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    final = output_dir / f"checkpoint-{step}"
    if final.exists():
        if is_complete(final):
            return final  # never overwrite a complete checkpoint (a resumed run reaching the same step)
        aside = output_dir / f"{final.name}.incomplete-{int(time.time())}"
        os.replace(final, aside)
    tmp = output_dir / f".tmp-{final.name}"
    if tmp.exists():
        shutil.rmtree(tmp)  # a previous interrupted save of this step: never a complete checkpoint
    tmp.mkdir()

    def put(name, writer):
        path = tmp / name
        writer(path)
        _fsync_file(path)
        _test_pause()

    put("model.safetensors", lambda p: save_file(_state_tensors(model), str(p)))
    if ema is not None:
        put("ema.safetensors", lambda p: save_file(_state_tensors(ema), str(p)))
    if optimizer is not None:
        tensors, skeleton = flatten_optimizer(optimizer)
        put("optimizer.safetensors", lambda p: save_file(tensors, str(p)))
        put("optimizer.json", lambda p: _write_json(p, skeleton))
    for name, tensors in (extra or {}).items():
        put(
            f"{name}.safetensors",
            lambda p, t=tensors: save_file({k: v.contiguous().cpu() for k, v in t.items()}, str(p)),
        )
    put("rng.safetensors", lambda p: save_file(rng_tensors(generators or {}), str(p)))
    put("rng.json", lambda p: _write_json(p, {"numpy": _numpy_state_json()}))
    put("config.json", lambda p: _write_json(p, portable_config(config)))
    put("state.json", lambda p: _write_json(p, {"step": int(step), **(state or {})}))
    _fsync_dir(tmp)
    os.replace(tmp, final)
    _fsync_dir(output_dir)
    write_manifest(final)
    if total_limit:
        prune(output_dir, total_limit, keep=final)
    return final


def prune(output_dir, total_limit, *, keep=None):
    """Delete the oldest checkpoints beyond `total_limit` (complete ones count; `keep` is never deleted)."""
    if total_limit < 1:
        raise ValueError(f"checkpoints_total_limit={total_limit}: expected an integer >= 1")
    complete = [(s, p) for s, p in list_checkpoints(output_dir) if is_complete(p)]
    excess = len(complete) - total_limit
    for _, path in complete[: max(excess, 0)]:
        if keep is not None and Path(path) == Path(keep):
            continue
        shutil.rmtree(path)


# ----------------------------------------------------------------------------------------------------------
# Load
# ----------------------------------------------------------------------------------------------------------


def read_config(ckpt_dir: str | Path, manifest: dict | None = None) -> dict:
    """config.json of a checkpoint, after its manifest verifies (pass `manifest` if it was just verified)."""
    manifest = verify_manifest(ckpt_dir) if manifest is None else manifest
    listed(ckpt_dir, manifest, "config.json")
    path = Path(ckpt_dir) / "config.json"
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"checkpoint {str(ckpt_dir)!r}: config.json is not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise ValueError(f"checkpoint {str(ckpt_dir)!r}: config.json is not a JSON object")
    return config


def check_compatible(saved, current, *, source):
    """Raise ValueError naming the first config entry where a checkpoint differs from the run resuming it."""
    saved, current = portable_config(saved), portable_config(current)
    for key in RESUME_KEYS:
        if saved.get(key) != current.get(key):
            raise ValueError(
                f"cannot resume from {source}: its config {key!r} is {json.dumps(saved.get(key))} but "
                f"this run has {json.dumps(current.get(key))}; use the same flags or a new --output-dir"
            )


def _tensors(path):
    """safetensors' load_file, its errors (a file that is not safetensors) as a ValueError naming the file."""
    try:
        return load_file(path)
    except (OSError, ValueError, RuntimeError) as err:
        raise ValueError(f"{path!r} is not a readable safetensors file ({_first_line(err)})") from None
    except Exception as err:  # safetensors_rust.SafetensorError derives from Exception only
        if type(err).__name__ != "SafetensorError":
            raise
        raise ValueError(f"{path!r} is not a readable safetensors file ({_first_line(err)})") from None


def _first_line(err):
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def load_training_state(ckpt_dir, *, model, ema=None, optimizer=None, generators=None, config=None):
    """Restore weights, EMA, optimizer and RNG states in place; returns state.json's dict."""
    ckpt_dir = Path(ckpt_dir)
    manifest = verify_manifest(ckpt_dir)
    saved = read_config(ckpt_dir, manifest)

    def path(name):
        return str(listed(ckpt_dir, manifest, name))

    if config is not None:
        check_compatible(saved, config, source=str(ckpt_dir))
    unwrap(model).load_state_dict(_tensors(path("model.safetensors")))
    if ema is not None:
        unwrap(ema).load_state_dict(_tensors(path("ema.safetensors")))
    if optimizer is not None:
        skeleton = json.loads(Path(path("optimizer.json")).read_text())
        optimizer.load_state_dict(unflatten_optimizer(_tensors(path("optimizer.safetensors")), skeleton))
    rng = _tensors(path("rng.safetensors"))
    numpy_state = json.loads(Path(path("rng.json")).read_text())["numpy"]
    restore_rng(rng, numpy_state, generators or {})
    return json.loads(Path(path("state.json")).read_text())


def load_tensors(ckpt_dir: str | Path, name: str) -> dict:
    """The tensors of NAME.safetensors in a verified checkpoint (written through save_checkpoint's `extra`)."""
    manifest = verify_manifest(ckpt_dir)
    return _tensors(str(listed(ckpt_dir, manifest, f"{name}.safetensors")))


def load_for_inference(ckpt_dir: str | Path, *, ema: bool = True) -> tuple[torch.nn.Module, dict]:
    """(model in eval mode, float32, on CPU; config dict) from a checkpoint folder (or an OUTPUT_DIR: its latest)."""
    from diffspec.trainer.models import build_model

    ckpt_dir = Path(ckpt_dir)
    if not (ckpt_dir / MANIFEST).exists() and not (ckpt_dir / "config.json").exists():
        latest = find_latest(ckpt_dir)
        if latest is None:
            raise ValueError(
                f"{str(ckpt_dir)!r} is neither a checkpoint folder nor an output folder with a complete "
                "checkpoint-STEP inside"
            )
        ckpt_dir = latest
    manifest = verify_manifest(ckpt_dir)
    config = read_config(ckpt_dir, manifest)
    model = build_model(config["model"]["arch"], **config["model"]["kwargs"])
    use_ema = ema and listed(ckpt_dir, manifest, "ema.safetensors", required=False) is not None
    name = "ema.safetensors" if use_ema else "model.safetensors"
    try:
        model.load_state_dict(_tensors(str(listed(ckpt_dir, manifest, name))))
    except RuntimeError as err:
        raise ValueError(
            f"checkpoint {str(ckpt_dir)!r}: {name} does not fit the model in config.json ({err})"
        ) from None
    return model.float().eval(), config
