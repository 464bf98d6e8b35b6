"""The pipeline graph: the whole sampler around the network in one ONNX model that any onnxruntime can run.

    export_pipeline("model.onnx", "digits-sampler.onnx", sampler="dpmpp_2m", steps=20)

Inputs (fixed names): `x_T` float32 [B, ...] standard normal draws (the graph applies the start scaling
sigma(t_start)); `noise` float32 [S, B, ...] for samplers that draw (entry k is the sampler's k-th draw, in the
reference's documented order; S is fixed by sampler and steps); `y` int64 [B] for class-conditional models;
`guidance_scale` float32 [1] when guidance is dynamic. Outputs: `sample` float32 [B, ...] in the data's original
range (training scaling undone, clipped for images) and, for images, `image` uint8 [B, H, W, C].

How the sampler becomes constants: for a fixed grid, every sampler exported here is linear in x_T, in the
network outputs F_k and in its noise draws z_j (its coefficients depend on the grid only). `trace_sampler` runs
the reference sampler itself, in float64, with basis vectors in place of arrays: x_T is the unit vector e_0 times
sigma(t_start), the k-th denoiser call returns c_skip(t_k) x + c_out(t_k) e_(next) (x0 from the network output F,
Karras et al. 2022, Table 1) and the j-th draw returns e_(next). What comes back is each network input and the
final sample as coefficient vectors over (x_T, F_1, z_1, ...). No third copy of any sampler's formulas: a
sampler whose result is not such a linear form (adaptive step size, RK45, a data-dependent step size) is found
by replaying the traced program against the reference on a nonlinear test network and refused, with the list
of those that can be exported. The learned-variance DDPM (variance='learned_range') is linear once each draw is
scaled by exp((v + 1) / 4 L), v the network's variance output; L is read off two traces (v = -1 and v = +1).

The graph is unrolled: the network's nodes are repeated once per call under a prefix, sharing its initializers,
and each network input is a short sum of already computed tensors (`_plan`). Why unrolled and not Loop/Scan:
docs/pipeline.md.
"""

import json
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnx
from diffspec.export.files import load_model_safely, write_atomically
from diffspec.reference.modelcard import PREFIX, ModelCard
from diffspec.reference.parameterizations import coefficients
from diffspec.reference.parameterizations import parse as parse_parameterization
from diffspec.reference.samplers import SAMPLER_ALIASES, SAMPLER_INFO
from diffspec.runtime.sampling import check_sampler, make_sampling_grid, sampling_recipe
from onnx import TensorProto, helper, numpy_helper

PIPELINE_KEY = PREFIX + "pipeline"
MAX_CALLS = 1000  # network calls in one unrolled graph
GUIDANCE_DYNAMIC = "dynamic"
FORMS = ("unrolled", "loop")
_REL_TOL = 1e-9  # the traced program against the reference sampler, float64, relative to max |x|


class PipelineError(ValueError):
    """A pipeline graph cannot be built for these arguments; the message says why and what can be."""


class _Refused(Exception):
    """A sampler that cannot be a static graph (turned into a PipelineError listing those that can)."""


# --------------------------------------------------------------------------------------------------- tracing
@dataclass(frozen=True)
class Program:
    """A sampler on a fixed grid as linear forms over the basis (x_T, then network outputs and draws in order).

    kinds[j] is "x_T", "net" or "noise"; calls[k] = (t_k, coefficient vector of the k-th network input);
    `out` the coefficient vector of the final sample (model space). Coefficients are float64.
    """

    sampler: str
    options: dict
    steps: int
    grid_name: str | None
    grid_options: dict
    grid: np.ndarray
    kinds: tuple
    calls: tuple
    out: np.ndarray = field(repr=False)
    # learned-variance DDPM: (basis index of a draw, the call whose variance output scales it, L) with the draw
    # entering as z * exp((v + 1) / 4 * L), v in [-1, 1] the network's variance half (coefficients traced at v = -1)
    noise_scale: tuple = ()

    @property
    def num_draws(self) -> int:
        return sum(k == "noise" for k in self.kinds)

    @property
    def num_calls(self) -> int:
        return len(self.calls)


def _coefficient_fn(schedule, parameterization):
    param = parse_parameterization(parameterization)

    def c(t):
        c_skip, c_out = coefficients(param, schedule.alpha(t), schedule.sigma(t))
        return float(c_skip), float(c_out)

    return c


def _run_basis(fn, schedule, grid, coeff, options, size, variance_sign=None):
    """Run the reference sampler on coefficient vectors of length `size` (batch 1): returns (kinds, calls, out,
    {draw basis index: call index}); `variance_sign` (-1 or 1) is the learned variance v the sampler is given."""
    kinds, calls, scaled, pending = ["x_T"], [], {}, []

    def unit():
        e = np.zeros((1, size))
        if len(kinds) < size:
            e[0, len(kinds)] = 1.0
        return e

    def denoise(x, t):
        t = np.asarray(t, dtype=np.float64)
        if t.ndim and not np.all(t == t.flat[0]):
            raise PipelineError("the sampler called the denoiser at different times per sample")
        t = float(t.flat[0])
        x = np.asarray(x, dtype=np.float64)
        calls.append((t, x[0].copy()))
        c_skip, c_out = coeff(t)
        f = unit()
        kinds.append("net")
        return c_skip * x + c_out * f

    def draw(shape):
        z = unit()
        if pending:
            scaled[len(kinds)] = pending.pop()
        kinds.append("noise")
        return z

    def variance_v(x, t):
        pending[:] = [len(calls) - 1]
        return np.full(np.shape(x), float(variance_sign))

    if variance_sign is not None:
        options = {**options, "variance_v": variance_v}
    x_T = np.zeros((1, size))
    x_T[0, 0] = float(schedule.sigma(grid[0]))
    out = fn(denoise, x_T, grid, schedule, noise=draw, **options)
    return kinds, calls, np.asarray(out, dtype=np.float64)[0], scaled


def trace_sampler(schedule, parameterization, sampler, steps, *, grid=None, grid_options=None, options=None) -> Program:
    """The reference sampler `sampler` on the runtime's grid as a `Program` (see the module docstring).

    Raises PipelineError for a sampler that cannot live in a static graph, with the list of those that can.
    """
    try:
        return _trace(schedule, parameterization, sampler, steps, grid, grid_options, options)
    except _Refused as err:
        name, why = err.args
        raise PipelineError(
            f"sampler {name!r} cannot be exported as a static graph: it {why}. Samplers that can: "
            f"{', '.join(exportable_samplers())}"
        ) from None


def _trace(schedule, parameterization, sampler, steps, grid, grid_options, options):
    options = dict(options or {})
    name = SAMPLER_ALIASES.get(sampler, sampler) if isinstance(sampler, str) else sampler
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= MAX_CALLS:
        raise PipelineError(f"steps={steps!r}: expected an integer in 1..{MAX_CALLS}")
    fn = check_sampler(name, steps, options)
    info = SAMPLER_INFO[name]
    if info.calls_per_step is None:
        raise _refusal(name, "it chooses its steps adaptively (the number of network calls depends on the data)")
    if "variance_v" in options:
        raise PipelineError(
            "variance_v is not an option here: with variance='learned_range' the graph takes v from "
            "the network's own variance output"
        )
    learned = options.get("variance") == "learned_range"
    if int(steps) * info.calls_per_step > MAX_CALLS:
        raise PipelineError(
            f"steps={steps}: {name} would unroll {int(steps) * info.calls_per_step} network calls; "
            f"expected at most {MAX_CALLS} (steps <= {MAX_CALLS // info.calls_per_step})"
        )
    grid_ = make_sampling_grid(schedule, int(steps), grid=grid, grid_options=grid_options)
    coeff = _coefficient_fn(schedule, parameterization)
    # the reference sampler itself on data, with a nonlinear stand-in network: bad options fail here as ValueError
    eps, draws, expected = _reference_run(fn, schedule, grid_, coeff, options, learned)
    # basis vectors can make a nonlinear sampler divide 0 by 0: the replay refuses it, no warning needed
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            sign = -1.0 if learned else None
            kinds, _, _, _ = _run_basis(fn, schedule, grid_, coeff, options, 1, sign)
            kinds2, calls, out, scaled = _run_basis(fn, schedule, grid_, coeff, options, len(kinds), sign)
            noise_scale = _noise_scale(fn, schedule, grid_, coeff, options, kinds, calls, out, scaled, learned)
        except (PipelineError, ValueError, FloatingPointError):
            raise _refusal(name, NOT_LINEAR) from None
        if kinds2 != kinds or sum(k == "noise" for k in kinds) != len(draws):
            raise _refusal(name, "it makes a data-dependent number of network calls or draws")
        program = Program(
            sampler=name,
            options=options,
            steps=int(steps),
            grid_name=grid,
            grid_options=dict(grid_options or {}),
            grid=grid_,
            kinds=tuple(kinds),
            calls=tuple(calls),
            out=out,
            noise_scale=noise_scale,
        )
        got = replay(program, _test_network, eps, draws, variance=_test_variance if learned else None)
    err = float(np.max(np.abs(got - expected))) / max(float(np.max(np.abs(expected))), 1e-300)
    if not np.isfinite(err) or err > _REL_TOL:
        raise _refusal(name, f"{NOT_LINEAR} (replay off by {err:.1e})")
    return program


def _noise_scale(fn, schedule, grid, coeff, options, kinds, calls, out, scaled, learned):
    """For the learned-variance DDPM: per scaled draw j, L_j = 2 log(coefficient at v = 1 / at v = -1), read off
    the first traced linear form that holds draw j (the reference's log var is linear in (v + 1) / 2)."""
    if not learned:
        return ()
    _, calls_plus, out_plus, _ = _run_basis(fn, schedule, grid, coeff, options, len(kinds), 1.0)
    forms = [c for _, c in calls] + [out]
    forms_plus = [c for _, c in calls_plus] + [out_plus]
    result = []
    for j, k in sorted(scaled.items()):
        i = next(i for i, f in enumerate(forms) if f[j] != 0)
        result.append((j, k, float(2 * np.log(forms_plus[i][j] / forms[i][j]))))
    return tuple(result)


NOT_LINEAR = "it is not a fixed linear combination of its network outputs and draws on this grid"


def _refusal(name, why):
    return _Refused(name, why)


def _test_network(x, t):
    """A smooth nonlinear stand-in for a network, used only to check that a traced program is exact."""
    return np.tanh(0.8 * x + 0.3 * np.sin(3.0 * x) + 0.05 * t) + 0.1 * x


def _test_variance(x, t):
    """A stand-in for a learned-variance network's v in [-1, 1]."""
    return np.tanh(0.7 * x - 0.2 + 0.001 * t)


def _reference_run(fn, schedule, grid, coeff, options, learned=False):
    """(eps, draws, x): the reference sampler on random data (batch 2, 3 values) with `_test_network`."""
    rng = np.random.default_rng(0)
    eps = rng.standard_normal((2, 3))
    draws = []

    def draw(shape):
        draws.append(rng.standard_normal(shape))
        return draws[-1]

    def denoise(x, t):
        c_skip, c_out = coeff(float(t))
        return c_skip * x + c_out * _test_network(x, float(t))

    if learned:
        options = {**options, "variance_v": _test_variance}
    x = fn(denoise, float(schedule.sigma(grid[0])) * eps, grid, schedule, noise=draw, **options)
    return eps, np.array(draws).reshape((len(draws),) + eps.shape), np.asarray(x, dtype=np.float64)


def replay(program: Program, network, eps: np.ndarray, draws: np.ndarray, *, variance=None) -> np.ndarray:
    """The program in float64 numpy: network(x, t) -> F, eps [B, ...], draws [S, B, ...] -> x (model space)."""
    values = np.zeros((len(program.kinds),) + eps.shape)
    values[0] = eps
    noise_at = [j for j, k in enumerate(program.kinds) if k == "noise"]
    net_at = [j for j, k in enumerate(program.kinds) if k == "net"]
    values[noise_at] = draws
    scale_after: dict[int, list[tuple]] = {}  # network call -> (basis index of a draw, its log-variance factor)
    for j, k, L in program.noise_scale:
        scale_after.setdefault(k, []).append((j, L))
    for k, (t, c) in enumerate(program.calls):
        x = np.tensordot(c, values, axes=1)
        values[net_at[k]] = network(x, t)
        for j, L in scale_after.get(k, ()):
            values[j] = values[j] * np.exp((variance(x, t) + 1) / 4 * L)
    return np.tensordot(program.out, values, axes=1)


# ---------------------------------------------------------------------------------------------------- planning
def _plan(program: Program):
    """Each network input and the output as a short sum over already computed tensors.

    The coefficient vectors are dense over the basis (a step's x holds every earlier output); each target is
    written as a * (an earlier target) + a few basis terms, choosing the earlier target that leaves the fewest
    terms. Returns a list of ("combo", index, terms) / ("net", k) where terms are (coef, source) with source
    ("basis", j) or ("combo", i); combo i < num_calls is the input of call i, num_calls the output.
    """
    targets = [c for _, c in program.calls] + [program.out]
    steps: list[tuple] = []
    done: list[int] = []
    rebuilt: list[np.ndarray] = []
    for i, v in enumerate(targets):
        tol = 1e-12 * max(float(np.max(np.abs(v))), 1e-300)
        best = [("basis", j, float(v[j])) for j in np.flatnonzero(np.abs(v) > tol)]
        best_terms: list[tuple[float, tuple[str, int]]] = [(c, ("basis", int(j))) for _, j, c in best]
        for p in reversed(done[-8:]):  # the latest inputs are the useful ones (multistep: the previous one)
            u = targets[p]
            for j in np.flatnonzero((np.abs(u) > 0) & (np.abs(v) > tol)):
                a = v[j] / u[j]
                r = v - a * u
                rtol = 1e-12 * max(float(np.max(np.abs(v))), float(np.max(np.abs(a * u))), 1e-300)
                idx = np.flatnonzero(np.abs(r) > rtol)
                if len(idx) + 1 < len(best_terms):
                    best_terms = [(float(a), ("combo", p))] + [(float(r[q]), ("basis", int(q))) for q in idx]
                break  # pivot on the first shared basis entry (x_T's for most samplers); checked below
        w = np.zeros_like(v)
        for c, (kind, src) in best_terms:
            if kind == "basis":
                w[src] += c
            else:
                w += c * rebuilt[src]
        rebuilt.append(w)
        if float(np.max(np.abs(rebuilt[-1] - v))) > 1e-10 * max(float(np.max(np.abs(v))), 1e-300):
            raise PipelineError(
                f"{program.sampler}: the graph's sum for network input {i} does not reproduce the "
                "traced coefficients; please report this with the sampler and its options"
            )
        steps.append(("combo", i, best_terms))
        done.append(i)
        if i < len(program.calls):
            steps.append(("net", i))
    return steps


# ------------------------------------------------------------------------------------------------ the graph
class _Builder:
    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, stem):
        self.n += 1
        return f"pipe/{stem}_{self.n}"

    def const(self, value, dtype=np.float32, stem="c"):
        name = self.name(stem)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(self, op, inputs, stem=None, n_out=1, **attrs):
        outs = [self.name(stem or op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=outs[0] + "/node", **attrs))
        return outs[0] if n_out == 1 else outs


def _has_subgraph(node):
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def _inline(b, graph, prefix, feeds):
    """Copy the network's nodes under `prefix`, graph inputs replaced by `feeds`; initializers are shared."""
    shared = {i.name for i in graph.initializer} | {i.name for i in graph.sparse_initializer}
    rename = dict(feeds)

    def mapped(n):
        if not n or n in shared:
            return n
        if n not in rename:
            rename[n] = prefix + n
        return rename[n]

    for n_node, node in enumerate(graph.node):
        if _has_subgraph(node):
            raise PipelineError(
                f"the network has a {node.op_type} node with a subgraph; the pipeline graph inlines "
                "flat networks only (re-export with diffspec-export)"
            )
        new = onnx.NodeProto()
        new.CopyFrom(node)
        new.name = f"{prefix}{n_node}/{node.name or node.op_type}"
        del new.input[:]
        new.input.extend(mapped(n) for n in node.input)
        del new.output[:]
        new.output.extend(mapped(n) for n in node.output)
        b.nodes.append(new)
    return mapped(graph.output[0].name)


def _parse_rescale(guidance_rescale, mode, fused):
    phi = float(guidance_rescale or 0.0)
    if not 0.0 <= phi <= 1.0:
        raise PipelineError(f"guidance_rescale={guidance_rescale!r}: expected phi in [0, 1] (0 = off)")
    if phi and mode == "none":
        raise PipelineError(f"guidance_rescale={phi}: rescales classifier-free guidance; give a guidance scale too")
    if phi and fused:
        raise PipelineError(
            "guidance_rescale is not available for a network with fused guidance (it needs the "
            "conditional branch alone): export the network without --cfg-fused"
        )
    return phi


def _rescale(b, cond, guided, phi, data_shape, tag):
    """Guidance rescale (Lin et al. 2023, eqs. 15-16) on the network's own output space, as the runtime does:
    F = phi F_cfg std(F_cond) / std(F_cfg) + (1 - phi) F_cfg, std per sample over the non-batch axes
    (`diffspec.reference.guidance.guidance_rescale`), in float64."""
    f64 = TensorProto.DOUBLE
    axes = b.const(list(range(1, len(data_shape) + 1)), np.int64)

    def variance(a):
        centred = b.node("Sub", [a, b.node("ReduceMean", [a, axes], f"mean{tag}", keepdims=1)], f"dev{tag}")
        var = b.node("ReduceMean", [b.node("Mul", [centred, centred], f"sq{tag}"), axes], f"var{tag}", keepdims=1)
        return var  # Bessel's correction cancels in the ratio of the two variances

    c = b.node("Cast", [cond], f"c64_{tag}", to=f64)
    g = b.node("Cast", [guided], f"g64_{tag}", to=f64)
    ratio = b.node("Sqrt", [b.node("Div", [variance(c), variance(g)], f"var_ratio{tag}")], f"std_ratio{tag}")
    rescaled = b.node("Mul", [g, ratio], f"rescaled{tag}")
    mixed = b.node(
        "Add",
        [
            b.node("Mul", [rescaled, b.const(phi, np.float64)], f"phi_r{tag}"),
            b.node("Mul", [g, b.const(1.0 - phi, np.float64)], f"phi_g{tag}"),
        ],
        f"F_rescaled{tag}",
    )
    return mixed


def _parse_guidance(guidance, card):
    """None / 1.0 (off), a float scale, or "dynamic" -> (mode, scale)."""
    if guidance is None:
        return "none", 1.0
    if isinstance(guidance, str):
        if guidance != GUIDANCE_DYNAMIC:
            try:
                guidance = float(guidance)
            except ValueError:
                raise PipelineError(f"guidance={guidance!r}: expected a scale >= 0 or 'dynamic'") from None
        else:
            mode, scale = "dynamic", None
    if not isinstance(guidance, str):
        scale = float(guidance)
        if not np.isfinite(scale) or scale < 0:
            raise PipelineError(f"guidance_scale={guidance!r}: expected a finite scale >= 0 (1 = no guidance)")
        mode = "none" if scale == 1.0 else "static"
    if mode != "none" and not card.num_classes:
        raise PipelineError(
            f"guidance={guidance!r}: classifier-free guidance needs a class-conditional model (with "
            "a null class); this one is unconditional"
        )
    return mode, scale


def _loop_body(b, program, basis, shape_x, call_network):
    """The Loop form: H [N, B * D] float64 holds every basis tensor (x_T, draws, network outputs so far); call k
    reads its input as row vector C_in[k] @ H and writes F_k into row net_at[k]; the sample is c_out @ H."""
    f64 = TensorProto.DOUBLE
    N, K = len(program.kinds), len(program.calls)
    flat = b.node("Concat", [b.const([1], np.int64), b.const([-1], np.int64)], "flat_shape", axis=0)
    x_T_row = b.node("Reshape", [basis[0], flat], "x_T_row")
    zero_row = b.node("Mul", [x_T_row, b.const(0.0, np.float64)], "zero_row")
    rows = [b.node("Reshape", [basis[j], flat], f"row{j}") if j in basis and j else zero_row for j in range(N)]
    rows[0] = x_T_row
    H0 = b.node("Concat", rows, "H0", axis=0)
    c_in = b.const(np.stack([c for _, c in program.calls]), np.float64, "C_in")
    times = b.const(np.array([[t] for t, _ in program.calls]), np.float32, "times")
    net_at = [j for j, k in enumerate(program.kinds) if k == "net"]
    onehot = b.const(np.eye(N)[net_at][:, :, None], np.float64, "write_row")

    outer, b.nodes = b.nodes, []
    it, cond_in, H = "loop/iter", "loop/cond_in", "loop/H"
    c_k = b.node("Unsqueeze", [b.node("Gather", [c_in, it], "c_k", axis=0), b.const([0], np.int64)], "c_k_row")
    x_in = b.node("Reshape", [b.node("MatMul", [c_k, H], "x_in_row"), shape_x], "x_in64")
    x_in = b.node("Cast", [x_in], "x_in", to=TensorProto.FLOAT)
    F = call_network(x_in, b.node("Gather", [times, it], "t_k", axis=0), "_loop")
    F_row = b.node("Reshape", [b.node("Cast", [F], "F64", to=f64), flat], "F_row")
    w = b.node("Gather", [onehot, it], "w_k", axis=0)
    H_next = b.node("Add", [H, b.node("Mul", [w, F_row], "H_write")], "H_next")
    cond_out = b.node("Identity", [cond_in], "cond_out")
    body = helper.make_graph(
        b.nodes,
        "sampler_step",
        [
            helper.make_tensor_value_info(it, TensorProto.INT64, []),
            helper.make_tensor_value_info(cond_in, TensorProto.BOOL, []),
            helper.make_tensor_value_info(H, f64, [N, None]),
        ],
        [
            helper.make_tensor_value_info(cond_out, TensorProto.BOOL, []),
            helper.make_tensor_value_info(H_next, f64, [N, None]),
        ],
    )
    b.nodes = outer
    H_end = b.node(
        "Loop", [b.const(K, np.int64, "trip_count"), b.const(True, np.bool_, "true"), H0], "H_end", body=body
    )
    out_row = b.node("MatMul", [b.const(program.out[None, :], np.float64, "c_out"), H_end], "out_row")
    return b.node("Reshape", [out_row, shape_x], "x_out")


def build_pipeline(
    network: onnx.ModelProto,
    program: Program,
    *,
    guidance=None,
    guidance_rescale=0.0,
    image_output=True,
    form="unrolled",
):
    """The pipeline ModelProto around `network` (a diffspec network graph with its metadata) for `program`.

    form: "unrolled" (the network repeated once per call, sharing its initializers; the default) or "loop" (one
    ONNX Loop over the calls around a single copy of the network, the state a dense [basis, B * D] matrix),
    kept for the measurement in bench/runtime_speed.py and docs/pipeline.md.
    """
    if form not in FORMS:
        raise PipelineError(f"form={form!r}: expected one of {', '.join(FORMS)}")
    props = {p.key: p.value for p in network.metadata_props}
    card = ModelCard.from_metadata(props, source="the network")
    if PIPELINE_KEY in props:
        raise PipelineError("the file is already a pipeline graph: give the network .onnx file it was built from")
    mode, scale = _parse_guidance(guidance, card)
    phi = _parse_rescale(guidance_rescale, mode, "guidance_scale" in {i.name for i in network.graph.input})
    g = network.graph
    net_inputs = {i.name for i in g.input} - {i.name for i in g.initializer}
    data_shape = tuple(int(d) for d in card.data.shape)
    conditional = bool(card.num_classes)
    null_class = (card.num_classes if card.null_class is None else int(card.null_class)) if conditional else None
    fused = "guidance_scale" in net_inputs
    channels = data_shape[0]

    b = _Builder()
    inputs = [helper.make_tensor_value_info("x_T", TensorProto.FLOAT, ["B", *data_shape])]
    S = program.num_draws
    if S:
        inputs.append(helper.make_tensor_value_info("noise", TensorProto.FLOAT, [S, "B", *data_shape]))
    if conditional:
        inputs.append(helper.make_tensor_value_info("y", TensorProto.INT64, ["B"]))
    if mode == "dynamic":
        inputs.append(helper.make_tensor_value_info("guidance_scale", TensorProto.FLOAT, [1]))

    shape_x = b.node("Shape", ["x_T"], "shape_x")
    f64 = TensorProto.DOUBLE  # the sampler's state is float64, as in the runtime; only the network runs in float32
    batch = b.node("Slice", [shape_x, b.const([0], np.int64), b.const([1], np.int64)], "batch")
    basis = {0: b.node("Cast", ["x_T"], "x_T64", to=f64)}
    noise_at = [j for j, k in enumerate(program.kinds) if k == "noise"]
    net_at = [j for j, k in enumerate(program.kinds) if k == "net"]
    if S:
        # the graph's own batch check: noise [S, B', ...] reshaped to [S, B, ...] fails unless B' = B
        full = b.node("Concat", [b.const([S], np.int64), shape_x], "noise_shape", axis=0)
        checked = "pipe/noise_batch_must_equal_x_T_batch"
        b.nodes.append(helper.make_node("Reshape", ["noise", full], [checked], name=checked))
        noise64 = b.node("Cast", [checked], "noise64", to=f64)
        for k, j in enumerate(noise_at):
            basis[j] = b.node("Gather", [noise64, b.const(k, np.int64)], f"z{k}", axis=0)
    y = null_y = None
    if conditional:
        y = "pipe/y_batch_must_equal_x_T_batch"
        b.nodes.append(helper.make_node("Reshape", ["y", batch], [y], name=y))
        null_y = b.node("Expand", [b.const([null_class], np.int64), batch], "null_y")
    scale_t: str | None
    if mode == "dynamic":
        scale_t = "guidance_scale"
    elif mode == "static":
        scale_t = b.const([scale], np.float32, "guidance_scale")
    else:
        scale_t = b.const([1.0], np.float32, "guidance_scale") if fused else None
    pair = mode != "none" and not fused
    if pair:
        y2 = b.node("Concat", [y, null_y], "y_pair", axis=0)
        batch2 = b.node("Mul", [batch, b.const([2], np.int64)], "batch_pair")

    combos: dict[int, str] = {}

    def term(src):
        return basis[src[1]] if src[0] == "basis" else combos[src[1]]

    def call_network(x_in, t_1, tag, with_variance=False):
        """F (float32, guided) of the network at x_in [B, ...] float32 and time t_1 [1] float32; with_variance:
        (F, v) with v the variance half of a learned-variance network (the conditional branch's under guidance)."""
        feeds = {}
        if pair:
            feeds["x"] = b.node("Concat", [x_in, x_in], f"x_pair{tag}", axis=0)
            feeds["t"] = b.node("Expand", [t_1, batch2], f"t_pair{tag}")
            feeds["y"] = y2
        else:
            feeds["x"] = x_in
            feeds["t"] = b.node("Expand", [t_1, batch], f"t{tag}")
            if conditional:
                feeds["y"] = y
            if fused:
                feeds["guidance_scale"] = scale_t
        missing = net_inputs - set(feeds)
        if missing:
            raise PipelineError(f"the network has inputs {sorted(missing)} the pipeline cannot feed")
        out = _inline(b, g, f"call{tag}/", {n: feeds[n] for n in net_inputs})
        v = None
        if with_variance:  # channels [C, 2C) of iDDPM's output
            end = b.const([2 * channels], np.int64)
            v = b.node("Slice", [out, b.const([channels], np.int64), end, b.const([1], np.int64)], f"v{tag}")
            if pair:
                v = b.node("Split", [v], f"v_cu{tag}", n_out=2, axis=0, num_outputs=2)[0]
        if card.learned_variance:  # 2C channels: the parameterization's output is the first C
            out = b.node(
                "Slice", [out, b.const([0], np.int64), b.const([channels], np.int64), b.const([1], np.int64)], f"f{tag}"
            )
        if pair:
            cond, uncond = b.node("Split", [out], f"cu{tag}", n_out=2, axis=0, num_outputs=2)
            diff = b.node("Sub", [cond, uncond], f"d{tag}")
            out = b.node("Add", [uncond, b.node("Mul", [diff, scale_t], f"sd{tag}")], f"F{tag}")
            if phi:
                out = _rescale(b, cond, out, phi, data_shape, tag)
        return (out, v) if with_variance else out

    scale_after: dict[int, list[tuple]] = {}  # network call -> (basis index of a draw, its log-variance factor)
    for j, k, L in program.noise_scale:
        scale_after.setdefault(k, []).append((j, L))
    if program.noise_scale and not card.learned_variance:
        raise PipelineError(
            "variance='learned_range' needs a network exported with learned variance (2C outputs, "
            "learned_variance in its metadata): use variance='fixed_small' or 'fixed_large'"
        )
    if form == "loop" and program.noise_scale:
        raise PipelineError("form='loop' does not support variance='learned_range'; use the unrolled form")
    if form == "loop":
        x = _loop_body(b, program, basis, shape_x, call_network)
    else:
        combos = {}

        def term(src):
            return basis[src[1]] if src[0] == "basis" else combos[src[1]]

        for step in _plan(program):
            if step[0] == "combo":
                _, i, terms = step
                acc = None
                for coef, src in terms:
                    v = term(src) if coef == 1.0 else b.node("Mul", [term(src), b.const(coef, np.float64)], f"m{i}")
                    acc = v if acc is None else b.node("Add", [acc, v], f"x{i}")
                if acc is None:
                    acc = b.node("Mul", [basis[0], b.const(0.0, np.float64)], f"x{i}")
                combos[i] = acc
                continue
            k = step[1]
            x_in = b.node("Cast", [combos[k]], f"x_in{k}", to=TensorProto.FLOAT)
            t_k = b.const([program.calls[k][0]], np.float32, f"t{k}")
            if k in scale_after:  # learned variance: the draws after this call scaled by exp((v + 1) / 4 L)
                out, v = call_network(x_in, t_k, k, with_variance=True)
                v1 = b.node("Add", [b.node("Cast", [v], f"v64_{k}", to=f64), b.const(1.0, np.float64)], f"v1_{k}")
                for j, L in scale_after[k]:
                    s_j = b.node("Exp", [b.node("Mul", [v1, b.const(L / 4, np.float64)], f"lv{j}")], f"std{j}")
                    basis[j] = b.node("Mul", [basis[j], s_j], f"z_scaled{j}")
            else:
                out = call_network(x_in, t_k, k)
            basis[net_at[k]] = b.node("Cast", [out], f"F64_{k}", to=f64)
        x = combos[len(program.calls)]

    d = card.data
    raw64 = b.node(
        "Div", [b.node("Sub", [x, b.const(d.shift, np.float64)], "unshift"), b.const(d.scale, np.float64)], "raw64"
    )
    raw = b.node("Cast", [raw64], "raw", to=TensorProto.FLOAT)
    is_image = d.kind == "image"
    lo, hi = (float(v) for v in d.range)
    if is_image:
        b.nodes.append(helper.make_node("Clip", [raw, b.const(lo), b.const(hi)], ["sample"], name="pipe/clip"))
    else:
        b.nodes.append(helper.make_node("Identity", [raw], ["sample"], name="pipe/sample"))
    outputs = [helper.make_tensor_value_info("sample", TensorProto.FLOAT, ["B", *data_shape])]
    with_image = bool(image_output) and is_image and len(data_shape) == 3
    if with_image:
        unit = b.node("Div", [b.node("Sub", ["sample", b.const(lo)], "img"), b.const(hi - lo)], "img01")
        u8 = b.node("Round", [b.node("Mul", [unit, b.const(255.0)], "img255")], "imground")
        hwc = b.node("Transpose", [u8], "hwc", perm=[0, 2, 3, 1])
        b.nodes.append(helper.make_node("Cast", [hwc], ["image"], name="pipe/image", to=TensorProto.UINT8))
        c, h, w = data_shape
        outputs.append(helper.make_tensor_value_info("image", TensorProto.UINT8, ["B", h, w, c]))

    graph = helper.make_graph(
        b.nodes,
        "diffspec_pipeline",
        inputs,
        outputs,
        initializer=list(g.initializer) + b.inits,
        sparse_initializer=list(g.sparse_initializer),
    )
    model = helper.make_model(graph, opset_imports=list(network.opset_import), producer_name="diffspec")
    model.ir_version = network.ir_version
    model.functions.extend(network.functions)
    meta = pipeline_card(program, card, mode=mode, scale=scale, with_image=with_image)
    meta["guidance"]["rescale"] = phi
    meta["form"] = form
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    model.metadata_props.add(key=PIPELINE_KEY, value=json.dumps(meta))
    return model


def pipeline_card(program, card, *, mode, scale, with_image):
    """The `diffspec.pipeline` metadata: sampler, steps, grid, guidance and the input/output contract."""
    shape = [int(s) for s in card.data.shape]
    inputs = {
        "x_T": {
            "dtype": "float32",
            "shape": ["B", *shape],
            "meaning": "standard normal draws (the graph applies the start scaling sigma(t_start))",
        }
    }
    if program.num_draws:
        inputs["noise"] = {
            "dtype": "float32",
            "shape": [program.num_draws, "B", *shape],
            "meaning": "standard normal draws; entry k is the sampler's k-th draw",
        }
    if card.num_classes:
        inputs["y"] = {
            "dtype": "int64",
            "shape": ["B"],
            "meaning": f"class labels 0..{card.num_classes - 1}, "
            f"or the null class {card.num_classes if card.null_class is None else card.null_class}",
        }
    if mode == "dynamic":
        inputs["guidance_scale"] = {
            "dtype": "float32",
            "shape": [1],
            "meaning": "classifier-free guidance x0 = u + s (c - u); 1 = off",
        }
    outputs = {"sample": {"dtype": "float32", "shape": ["B", *shape], "range": list(card.data.range)}}
    if with_image:
        c, h, w = shape
        outputs["image"] = {"dtype": "uint8", "shape": ["B", h, w, c]}
    return {
        "sampler": program.sampler,
        "options": program.options,
        "steps": program.steps,
        "grid": program.grid_name,
        "grid_options": program.grid_options,
        "times": [float(t) for t in program.grid],
        "network_calls": program.num_calls,
        "draws": program.num_draws,
        "guidance": {"mode": mode, "scale": scale},
        "seeds": "sample i of `diffspec-sample --seed s` draws x_T, then noise[0], noise[1], ... from "
        "numpy.random.default_rng([s, i]).standard_normal(data shape)",
        "inputs": inputs,
        "outputs": outputs,
    }


# ---------------------------------------------------------------------------------------------------- public
@lru_cache(maxsize=1)
def _exportable():
    from diffspec.reference.schedules import make_schedule

    names = set()
    for schedule_name, grid in (("linear", "uniform"), ("flow", "shifted")):
        schedule = make_schedule(schedule_name)
        for name, info in SAMPLER_INFO.items():
            if info.calls_per_step is None or name in names:
                continue
            try:
                _trace(schedule, "v", name, 6, grid, None, None)
            except (_Refused, ValueError, FloatingPointError):
                continue
            names.add(name)
    return tuple(sorted(names))


def exportable_samplers() -> tuple:
    """The registry samplers that can be written as a pipeline graph (with their default options)."""
    return _exportable()


def read_pipeline_card(path) -> dict:
    """The `diffspec.pipeline` metadata of a pipeline file (ValueError if the file has none)."""
    model = load_model_safely(path, load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if PIPELINE_KEY not in props:
        raise PipelineError(f"{path}: not a diffspec pipeline graph (no {PIPELINE_KEY} metadata)")
    return json.loads(props[PIPELINE_KEY])


def pipeline_draws(meta: dict, data_shape, seed: int, indices):
    """(x_T, noise) float32 for samples `indices`: sample i draws x_T then each noise entry from
    numpy.random.default_rng([seed, i]), as `diffspec-sample --seed seed` does."""
    shape = tuple(int(s) for s in data_shape)
    S = int(meta["draws"])
    x_T = np.empty((len(indices),) + shape, dtype=np.float32)
    noise = np.empty((S, len(indices)) + shape, dtype=np.float32)
    for b, i in enumerate(indices):
        rng = np.random.default_rng([int(seed), int(i)])
        x_T[b] = rng.standard_normal(shape)
        for k in range(S):
            noise[k, b] = rng.standard_normal(shape)
    return x_T, noise


def export_pipeline(
    network_path: str | Path,
    output_path: str | Path,
    *,
    sampler: str | None = None,
    steps: int | None = None,
    grid: str | None = None,
    grid_options: dict | None = None,
    guidance: float | str | None = None,
    guidance_rescale: float = 0.0,
    image_output: bool = True,
    verify: bool = True,
    form: str = "unrolled",
    **options,
) -> Path:
    """Write the pipeline graph for the exported network `network_path` to `output_path` (no torch needed).

    sampler, steps, grid: those not named come from `diffspec.runtime.sampling.sampling_recipe` (a few-step
    student's own; otherwise dpmpp_2m at 20 steps on the default grid).

    guidance: None (off), a scale (diffusers convention, 1 = off) baked into the graph, or "dynamic" (an input
    `guidance_scale`). `verify`: run the written file with onnxruntime on fresh draws against the runtime's
    Python loop (`diffspec.runtime.sample` semantics) and refuse it when max|d| / max|x| > 1e-4.
    """
    network_path, output_path = Path(network_path), Path(output_path)
    if not output_path.parent.is_dir():
        raise PipelineError(f"output path {str(output_path)!r}: directory {str(output_path.parent)!r} does not exist")
    network = load_model_safely(network_path)
    props = {p.key: p.value for p in network.metadata_props}
    try:
        card = ModelCard.from_metadata(props, source=repr(str(network_path)))
    except (ValueError, TypeError, KeyError) as err:
        raise PipelineError(str(err)) from None
    if PIPELINE_KEY in props:
        raise PipelineError(f"{str(network_path)!r} is already a pipeline graph: give the network .onnx file")
    _parse_rescale(
        guidance_rescale, _parse_guidance(guidance, card)[0], "guidance_scale" in {i.name for i in network.graph.input}
    )
    try:
        sampler, steps, grid, grid_options = sampling_recipe(card, sampler, steps, grid, grid_options)
    except ValueError as err:
        raise PipelineError(str(err)) from None
    program = trace_sampler(
        card.reference_schedule(),
        card.parameterization,
        sampler,
        steps,
        grid=grid,
        grid_options=grid_options,
        options=options,
    )
    model = build_pipeline(
        network, program, guidance=guidance, guidance_rescale=guidance_rescale, image_output=image_output, form=form
    )
    check = (lambda tmp: verify_pipeline(tmp, network_path)) if verify else None
    write_atomically(model, output_path, check=check)
    return output_path


def verify_pipeline(pipeline_path, network_path, *, batch=3, seed=None, tolerance=1e-4, guidance_scale=1.7):
    """The pipeline graph against `diffspec.runtime.sample` (the reference sampler in Python driving the same
    network on onnxruntime) on the same draws: sample i's x_T and noise from numpy.random.default_rng([seed, i]).

    Returns max|d| / max|x| over the samples; raises RuntimeError above `tolerance`.
    """
    import onnxruntime as ort
    from diffspec.runtime.model import Model
    from diffspec.runtime.sampling import sample

    model = Model.load(str(network_path), device="cpu")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    sess = ort.InferenceSession(str(pipeline_path), sess_options=options, providers=["CPUExecutionProvider"])
    meta = json.loads(sess.get_modelmeta().custom_metadata_map[PIPELINE_KEY])
    seed = int(np.random.default_rng(seed).integers(2**31))
    x_T, noise = pipeline_draws(meta, model.data_shape, seed, range(batch))
    feeds = {"x_T": x_T}
    if meta["draws"]:
        feeds["noise"] = noise
    labels = None
    if model.conditional:
        labels = np.arange(batch, dtype=np.int64) % model.num_classes
        feeds["y"] = labels
    mode, scale = meta["guidance"]["mode"], meta["guidance"]["scale"]
    if mode == "dynamic":
        scale = guidance_scale
        feeds["guidance_scale"] = np.array([scale], dtype=np.float32)
    got = sess.run(["sample"], feeds)[0]
    expected = sample(
        model,
        sampler=meta["sampler"],
        steps=meta["steps"],
        indices=list(range(batch)),
        seed=seed,
        grid=meta["grid"],
        grid_options=meta["grid_options"],
        class_label=None if labels is None else labels.tolist(),
        guidance_scale=1.0 if mode == "none" else scale,
        guidance_rescale=meta["guidance"].get("rescale", 0.0),
        **meta["options"],
    )
    err = float(np.max(np.abs(got - expected)) / max(float(np.max(np.abs(expected))), 1e-30))
    if not err <= tolerance:
        raise RuntimeError(
            f"pipeline graph differs from the Python sampler: max|d|/max|x| = {err:.2e} (tolerance {tolerance:.0e})"
        )
    return err


__all__ = [
    "GUIDANCE_DYNAMIC",
    "PIPELINE_KEY",
    "PipelineError",
    "Program",
    "build_pipeline",
    "export_pipeline",
    "exportable_samplers",
    "pipeline_card",
    "pipeline_draws",
    "read_pipeline_card",
    "replay",
    "trace_sampler",
    "verify_pipeline",
]
