"""An exported diffspec model as a float64 denoiser: an onnxruntime session plus the model card in its metadata.

The ONNX contract (docs/architecture.md): inputs `x` float32 [B, ...], `t` float32 [B] (the schedule's own time),
`y` int64 [B] for class-conditional models (null class = `num_classes` means "no label"), optionally
`guidance_scale` float32 [1] for a graph with fused classifier-free guidance; one output shaped like `x`, the
parameterization's output F. Everything else (schedule, parameterization, data shape and scaling, classes)
is read from the file's metadata with `ModelCard.from_metadata`.

No torch and no `onnx` package here: only numpy and onnxruntime.
"""

import os

import numpy as np
from diffspec.reference.modelcard import ModelCard
from diffspec.reference.parameterizations import coefficients, x0_from_output
from diffspec.reference.parameterizations import parse as parse_parameterization
from diffspec.runtime.external_data import ExternalDataError, check_external_data

DEVICES = ("auto", "cuda", "cpu")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(double)": np.float64,
    "tensor(int32)": np.int32,
}


class ModelFileError(ValueError):
    """The file is missing, not ONNX, truncated, or breaks the diffspec ONNX contract."""


class ProviderError(RuntimeError):
    """The execution provider asked for is not the one onnxruntime gave."""


def _ort():
    try:
        import onnxruntime
    except ImportError as err:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "onnxruntime is not installed: pip install 'diffspec[runtime]' (CPU) or 'diffspec[gpu]' (CUDA), never both"
        ) from err
    return onnxruntime


def _first_line(err):
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _check_file(path):
    try:
        path = os.fspath(path)
    except TypeError:
        raise ModelFileError(f"model path {path!r}: expected a file path (str or os.PathLike)") from None
    if not isinstance(path, str):
        path = os.fsdecode(path)
    if not os.path.exists(path):
        raise ModelFileError(f"model file {path!r} does not exist")
    if os.path.isdir(path):
        raise ModelFileError(f"model path {path!r} is a directory: expected an .onnx file (see `diffspec-export`)")
    if os.path.getsize(path) == 0:
        raise ModelFileError(f"model file {path!r} is empty: expected an .onnx file written by `diffspec-export`")
    return path


def _providers_for(device, ort, *, cuda_graph, device_id):
    """The providers list to ask onnxruntime for, and whether CUDA is part of the request."""
    if device not in DEVICES:
        raise ValueError(f"device={device!r}: expected one of {', '.join(DEVICES)}")
    available = ort.get_available_providers()
    want_cuda = device == "cuda" or (device == "auto" and CUDA in available)
    if not want_cuda:
        return [CPU], False
    options = {"device_id": str(device_id)}
    if cuda_graph:
        options["enable_cuda_graph"] = "1"
    return [(CUDA, options), CPU], True


class Model:
    """An exported diffspec model. `Model.load(path, device=...)`, then `denoise(x, t, y)` (float64 in and out).

    Attributes: `card` (the ModelCard), `schedule` (the reference schedule rebuilt from it), `provider` (the
    execution provider onnxruntime actually runs), `session` (the onnxruntime InferenceSession).
    """

    def __init__(self, session, card, *, path, io_binding=False, cuda_graph=False, device_id=0):
        self.session = session
        self.card = card
        self.path = path
        self.schedule = card.reference_schedule()
        self.parameterization = parse_parameterization(card.parameterization)
        self.provider = session.get_providers()[0]
        self._coefficients = {}
        self._check_contract()
        self._runner = _make_runner(self, io_binding=io_binding, cuda_graph=cuda_graph, device_id=device_id)

    # ---------------------------------------------------------------------------------------------- loading
    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        device: str = "auto",
        allow_cpu_fallback: bool = False,
        io_binding: bool | None = None,
        cuda_graph: bool = False,
        threads: int = 0,
        device_id: int = 0,
        verbose: bool = False,
    ) -> "Model":
        """Open an exported `.onnx` file on `device` ("auto": CUDA when onnxruntime offers it, else CPU).

        device="cuda" that onnxruntime cannot honour raises ProviderError unless `allow_cpu_fallback`.
        `io_binding`: None chooses (on for CUDA, off for CPU, where it measured slower, see bench/runtime_speed.py).
        `cuda_graph`: capture the network once per batch shape as a CUDA graph (CUDA only; the batch is padded
        to a fixed size).
        """
        ort = _ort()
        path = _check_file(path)
        providers, want_cuda = _providers_for(device, ort, cuda_graph=cuda_graph, device_id=device_id)
        if device == "cuda" and CUDA not in ort.get_available_providers() and not allow_cpu_fallback:
            raise ProviderError(
                f"device='cuda' but this onnxruntime ({ort.__version__}, providers: "
                f"{', '.join(ort.get_available_providers())}) has no CUDAExecutionProvider: install onnxruntime-gpu "
                "instead of onnxruntime (pip uninstall onnxruntime; pip install 'diffspec[gpu]'), use --device cpu, "
                "or pass --allow-cpu-fallback"
            )
        if device == "cuda" and CUDA not in ort.get_available_providers():
            providers, want_cuda = [CPU], False
        options = ort.SessionOptions()
        options.log_severity_level = 1 if verbose else 3
        if threads:
            options.intra_op_num_threads = int(threads)
        try:  # our own containment check, whatever onnxruntime version is installed, before it opens the file
            check_external_data(path)
        except ExternalDataError as err:
            raise ModelFileError(str(err)) from None
        except OSError as err:
            raise ModelFileError(f"model file {path!r} cannot be read ({err.strerror or err})") from None
        try:
            session = ort.InferenceSession(path, sess_options=options, providers=providers)
        except Exception as err:  # onnxruntime raises its own pybind exception types for every parse failure
            raise ModelFileError(
                f"{path!r} is not a readable ONNX model (onnxruntime: {_first_line(err)}): export it again with "
                "`diffspec-export CHECKPOINT_DIR -o model.onnx`"
            ) from None
        used = session.get_providers()
        if want_cuda and CUDA not in used:
            if device == "cuda" and not allow_cpu_fallback:
                raise ProviderError(
                    f"device='cuda' was asked for, but onnxruntime created the session on {used[0]} (it falls back "
                    "silently when CUDA or cuDNN cannot be loaded; run with --verbose to see onnxruntime's log). "
                    "Fix the CUDA install, use --device cpu, or pass --allow-cpu-fallback"
                )
            if cuda_graph:  # CUDA graphs do not exist on the CPU provider
                cuda_graph = False
        if cuda_graph and CUDA not in used:
            raise ValueError("cuda_graph=True needs the CUDA provider: use --device cuda")
        try:
            props = session.get_modelmeta().custom_metadata_map
        except Exception as err:  # pragma: no cover - defensive
            raise ModelFileError(f"{path!r}: cannot read its metadata ({_first_line(err)})") from None
        if "diffspec.pipeline" in props:
            raise ModelFileError(
                f"{path!r} is a pipeline graph (the whole sampler is inside it): run it with onnxruntime directly, "
                "feeding x_T (and noise, y, guidance_scale as its card says; see docs/pipeline.md), or sample the "
                "network file it was exported from"
            )
        try:
            card = ModelCard.from_metadata(props, source=repr(path))
        except (ValueError, TypeError, KeyError) as err:
            raise ModelFileError(
                str(err)
                if isinstance(err, ValueError)
                else f"{path!r}: diffspec metadata is malformed ({err}); re-export the model"
            ) from None
        if io_binding is None:
            io_binding = CUDA in used
        return cls(session, card, path=path, io_binding=io_binding, cuda_graph=cuda_graph, device_id=device_id)

    # ------------------------------------------------------------------------------------------- properties
    @property
    def data_shape(self):
        return tuple(int(d) for d in self.card.data.shape)

    @property
    def num_classes(self):
        return self.card.num_classes or 0

    @property
    def conditional(self):
        return self.num_classes > 0

    @property
    def null_class(self):
        if not self.conditional:
            return None
        return self.num_classes if self.card.null_class is None else int(self.card.null_class)

    @property
    def cfg_fused(self):
        return "guidance_scale" in self._inputs

    def __repr__(self):
        return (
            f"Model({self.path!r}, provider={self.provider}, schedule={self.card.schedule.get('name')}, "
            f"parameterization={self.parameterization.value}, data_shape={self.data_shape}, "
            f"num_classes={self.card.num_classes})"
        )

    # ------------------------------------------------------------------------------------------ the contract
    def _check_contract(self):
        src = repr(self.path)
        inputs = {i.name: i for i in self.session.get_inputs()}
        self._inputs = inputs
        self._input_dtypes = {}
        for name in inputs:
            dtype = _ORT_DTYPES.get(inputs[name].type)
            if dtype is None:
                raise ModelFileError(
                    f"{src}: input {name!r} has type {inputs[name].type}, which the runtime cannot feed"
                )
            self._input_dtypes[name] = dtype
        missing = [n for n in ("x", "t") if n not in inputs]
        if missing:
            raise ModelFileError(
                f"{src}: graph inputs are {sorted(inputs)}, missing {missing}: the diffspec contract is x float32 "
                "[B, ...], t float32 [B] and y int64 [B] for class-conditional models; re-export with diffspec-export"
            )
        if self._input_dtypes["t"] not in (np.float32, np.float16, np.float64):
            raise ModelFileError(
                f"{src}: input 't' is {inputs['t'].type}, expected tensor(float): an integer time input truncates "
                "non-integer times; re-export with diffspec-export"
            )
        if self._input_dtypes["x"] not in (np.float32, np.float16, np.float64):
            raise ModelFileError(f"{src}: input 'x' is {inputs['x'].type}, expected tensor(float)")
        rank = len(inputs["x"].shape)
        if rank != 1 + len(self.data_shape):
            raise ModelFileError(
                f"{src}: input 'x' has rank {rank} but the metadata's data shape {self.data_shape} needs rank "
                f"{1 + len(self.data_shape)}"
            )
        if self.conditional and "y" not in inputs:
            raise ModelFileError(f"{src}: metadata says num_classes={self.num_classes} but the graph has no 'y' input")
        if "y" in inputs and not self.conditional:
            raise ModelFileError(f"{src}: the graph has a 'y' input but the metadata has no num_classes")
        if "y" in inputs and self._input_dtypes["y"] not in (np.int64, np.int32):
            raise ModelFileError(f"{src}: input 'y' is {inputs['y'].type}, expected tensor(int64)")
        extra = sorted(set(inputs) - {"x", "t", "y", "guidance_scale"})
        if extra:
            raise ModelFileError(
                f"{src}: unexpected graph inputs {extra}: the runtime feeds only x, t, y, guidance_scale"
            )
        if self.card.time_input != "t":
            raise ModelFileError(
                f"{src}: time_input={self.card.time_input!r}; this runtime feeds the schedule's own time t "
                "(time_input='t'): re-export with this diffspec version"
            )
        self._output_name = self.session.get_outputs()[0].name

    # ---------------------------------------------------------------------------------------------- calling
    def labels(self, y, batch):
        """y as an int64 array of shape (batch,), checked against the model's classes (None: the null class)."""
        if not self.conditional:
            if y is not None:
                raise ValueError(
                    "y (class labels) given, but this model is unconditional (no num_classes in its metadata)"
                )
            return None
        if y is None:
            return np.full(batch, self.null_class, dtype=np.int64)
        if isinstance(y, np.ndarray) and y.dtype == np.int64 and y.shape == (batch,) and batch:
            if 0 <= y.min() and y.max() <= self.null_class:  # the fast path of every sampler step
                return y
        y = np.broadcast_to(np.asarray(y), (batch,))
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"class labels of dtype {y.dtype}: expected integers")
        bad = y[(y < 0) | (y > self.null_class)]
        if bad.size:
            raise ValueError(
                f"class label {int(bad[0])} is out of range: this model has classes 0..{self.num_classes - 1} "
                f"(and the null class {self.null_class})"
            )
        return y.astype(np.int64)

    def times(self, t, batch):
        """t as float64 of shape (batch,), from a scalar or per-sample times."""
        t = np.asarray(t, dtype=np.float64)
        if t.ndim == 0:
            return np.full(batch, float(t))
        if t.shape != (batch,):
            raise ValueError(f"t of shape {t.shape}: expected a scalar or shape ({batch},)")
        return t

    def network(self, x, t, y=None, *, guidance_scale=None, return_variance=False):
        """The raw network output F (float32 array shaped like x) for x (B, ...), t scalar or (B,), y (B,) or None.

        `guidance_scale` only for a graph with fused guidance (input `guidance_scale`).
        `return_variance`: return (F, v) from the same call, v the variance half of a learned-variance model's 2C
        output (iDDPM's v in [-1, 1], float32 shaped like x), or None for a model without learned variance.
        """
        x = np.asarray(x)
        if x.shape[1:] != self.data_shape:
            raise ValueError(f"x of shape {x.shape}: expected (B, {', '.join(map(str, self.data_shape))})")
        batch = x.shape[0]
        feeds = {
            "x": x.astype(self._input_dtypes["x"], copy=False),
            "t": self.times(t, batch).astype(self._input_dtypes["t"]),
        }
        labels = self.labels(y, batch)
        if labels is not None:
            feeds["y"] = labels.astype(self._input_dtypes["y"], copy=False)
        if "guidance_scale" in self._inputs:
            scale = 1.0 if guidance_scale is None else float(guidance_scale)
            feeds["guidance_scale"] = np.array([scale], dtype=self._input_dtypes["guidance_scale"])
        elif guidance_scale is not None:
            raise ValueError("guidance_scale is for a graph with fused guidance; this one has no such input")
        try:
            out = self._runner(feeds)
        except (ValueError, ModelFileError):
            raise
        except Exception as err:  # onnxruntime's own exception types: say what was fed, not its C++ trace
            shapes = ", ".join(f"{k} {v.dtype}{list(v.shape)}" for k, v in feeds.items())
            raise RuntimeError(f"onnxruntime failed to run {self.path!r} on {shapes}: {_first_line(err)}") from None
        v = None
        if out.shape != x.shape:
            if self.card.learned_variance and out.shape[1] == 2 * x.shape[1] and out.shape[2:] == x.shape[2:]:
                # iDDPM: channels [0, C) are the parameterization's output, [C, 2C) the variance's v
                out, v = out[:, : x.shape[1]], out[:, x.shape[1] :]
            else:
                raise ModelFileError(f"{self.path!r}: output of shape {out.shape} for x of shape {x.shape}")
        elif self.card.learned_variance and return_variance:
            raise ModelFileError(
                f"{self.path!r}: metadata says learned_variance but the output has x's shape {x.shape}, not 2C "
                "channels; re-export with diffspec-export"
            )
        return (out, v) if return_variance else out

    def x0_from_output(self, output, x, t):
        """The network output F at (x, t) converted to x0_hat, in float64 (the parameterization is in the card).

        `reference.parameterizations.x0_from_output`; for a scalar t (what samplers pass) its coefficients
        (c_skip, c_out) are computed once per time and cached, since every batch visits the same grid times.
        """
        if np.ndim(t) == 0:
            key = float(t)
            coeffs = self._coefficients.get(key)
            if coeffs is None:
                coeffs = coefficients(self.parameterization, self.schedule.alpha(key), self.schedule.sigma(key))
                coeffs = tuple(float(c) for c in coeffs)
                if len(self._coefficients) < 100_000:
                    self._coefficients[key] = coeffs
            c_skip, c_out = coeffs
            return c_skip * np.asarray(x, dtype=np.float64) + c_out * np.asarray(output, dtype=np.float64)
        t = self.times(t, x.shape[0])
        return x0_from_output(self.parameterization, output, x, self.schedule.alpha(t), self.schedule.sigma(t))

    def denoise(self, x, t, y=None):
        """x0_hat = D(x, t; y) in float64: x float64 (B, ...), t a scalar or (B,), y (B,) labels or None."""
        x = np.asarray(x, dtype=np.float64)
        return self.x0_from_output(self.network(x, t, y), x, t)

    def to_raw(self, x_model):
        """Model space -> the data's original value range (undoes x_model = x_raw * scale + shift)."""
        return self.card.data.to_raw(np.asarray(x_model, dtype=np.float64))

    def from_raw(self, x_raw):
        d = self.card.data
        return np.asarray(x_raw, dtype=np.float64) * d.scale + d.shift


# -------------------------------------------------------------------------------------------------- runners
def _make_runner(model, *, io_binding, cuda_graph, device_id):
    if cuda_graph:
        return _BoundRunner(model, device="cuda", device_id=device_id, fixed_batch=True)
    if io_binding:
        on_cuda = model.provider == CUDA
        return _BoundRunner(model, device="cuda" if on_cuda else "cpu", device_id=device_id, fixed_batch=False)
    return _PlainRunner(model)


class _PlainRunner:
    """session.run: onnxruntime copies inputs in and allocates the output on every call."""

    def __init__(self, model):
        self.session, self.output = model.session, model._output_name

    def __call__(self, feeds):
        return self.session.run([self.output], feeds)[0]


class _BoundRunner:
    """IOBinding with input and output buffers allocated once per batch shape (on the device for CUDA).

    Each call copies the new inputs into the bound buffers (`update_inplace`) and the output back to the host;
    onnxruntime allocates nothing per call. With `fixed_batch` (CUDA graphs) the batch is padded to the first
    batch size seen, so one captured graph serves every call (the graph needs fixed shapes and addresses).
    """

    def __init__(self, model, *, device, device_id, fixed_batch):
        self.session, self.output_name = model.session, model._output_name
        self.device, self.device_id, self.fixed_batch = device, device_id, fixed_batch
        self.shape_key, self.binding, self.buffers, self.out = None, None, {}, None
        self.run_options = None

    def _bind(self, feeds):
        ort = _ort()
        self.binding = self.session.io_binding()
        self.buffers = {}
        for name, arr in feeds.items():
            # a private copy: on the CPU the OrtValue may share the numpy buffer that update_inplace overwrites
            buf = ort.OrtValue.ortvalue_from_numpy(np.array(arr, copy=True, order="C"), self.device, self.device_id)
            self.binding.bind_ortvalue_input(name, buf)
            self.buffers[name] = buf
        out_shape = feeds["x"].shape
        self.out = ort.OrtValue.ortvalue_from_shape_and_type(out_shape, np.float32, self.device, self.device_id)
        try:
            self.binding.bind_ortvalue_output(self.output_name, self.out)
        except Exception:  # learned variance: the output shape differs from x, let onnxruntime allocate it
            self.out = None
            self.binding.bind_output(self.output_name, self.device, self.device_id)
        self.shape_key = {k: v.shape for k, v in feeds.items()}

    def _pad(self, feeds):
        batch = feeds["x"].shape[0]
        if self.shape_key is None:
            return feeds, batch
        target = self.shape_key["x"][0]
        if batch > target:
            raise ValueError(f"batch {batch} exceeds the captured CUDA graph's batch {target}: use one batch size")
        if batch == target:
            return feeds, batch
        padded = {}
        for name, arr in feeds.items():
            if name == "guidance_scale":
                padded[name] = arr
                continue
            fill = np.repeat(arr[:1], target - batch, axis=0)
            padded[name] = np.concatenate([arr, fill], axis=0)
        return padded, batch

    def __call__(self, feeds):
        if self.fixed_batch:
            feeds, batch = self._pad(feeds)
        else:
            batch = feeds["x"].shape[0]
        key = {k: v.shape for k, v in feeds.items()}
        if key != self.shape_key:
            if self.fixed_batch and self.shape_key is not None:
                raise ValueError("CUDA graph: input shapes changed; the graph is captured for one shape")
            self._bind(feeds)
        else:
            for name, arr in feeds.items():
                self.buffers[name].update_inplace(np.ascontiguousarray(arr))
        self.session.run_with_iobinding(self.binding)
        if self.out is not None:
            out = self.out.numpy()
            if self.device == "cpu":  # a view of the bound buffer, which the next call overwrites
                out = out.copy()
        else:
            out = self.binding.copy_outputs_to_cpu()[0]
        return out[:batch]
