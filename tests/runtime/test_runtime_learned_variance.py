"""ddpm with variance='learned_range' on a learned-variance model (2C outputs): v from the same network call."""

import numpy as np
import onnxruntime as ort
import pytest
from diffspec.reference.guidance import cfg_diffusers
from diffspec.reference.parameterizations import x0_from_output
from diffspec.reference.samplers import SAMPLERS
from diffspec.runtime import Model, SampleNoise, sample
from diffspec.runtime.sampling import labels_for, make_sampling_grid
from rt_helpers import learned_variance_model, run_cli

STEPS = 7


@pytest.fixture(scope="module")
def lv_path(tmp_path_factory):
    return learned_variance_model(tmp_path_factory.mktemp("lv") / "points_lv.onnx")[0]


def _reference(path, n, seed, *, guidance_scale=1.0):
    """The reference ddpm learned_range driven by the raw ONNX output (its own session), noise from SampleNoise."""
    m = Model.load(path, device="cpu")
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    idx = np.arange(n)
    y = labels_for(m, idx)
    null = np.full(n, m.null_class)

    def raw(x, t, labels):
        feeds = {"x": x.astype(np.float32), "t": np.full(len(x), t, dtype=np.float32), "y": labels}
        out = sess.run(None, feeds)[0].astype(np.float64)
        return out[:, :2], out[:, 2:]

    def x0(x, t, labels):
        return x0_from_output("eps", raw(x, t, labels)[0], x, m.schedule.alpha(t), m.schedule.sigma(t))

    cond = lambda x, t: x0(x, t, y)  # noqa: E731
    denoise = cond if guidance_scale == 1.0 else cfg_diffusers(cond, lambda x, t: x0(x, t, null), guidance_scale)
    grid = make_sampling_grid(m.schedule, STEPS)
    noise = SampleNoise(seed, idx)
    x_T = float(m.schedule.sigma(grid[0])) * noise((n, 2))
    return SAMPLERS["ddpm"](
        denoise, x_T, grid, m.schedule, noise=noise, variance="learned_range", variance_v=lambda x, t: raw(x, t, y)[1]
    )


def _counting(m):
    calls = []
    runner = m._runner

    def counted(feeds):
        calls.append(feeds["x"].shape[0])
        return runner(feeds)

    m._runner = counted
    return calls


@pytest.mark.parametrize("guidance_scale", [1.0, 2.5])
def test_api_matches_reference_one_call_per_step(lv_path, guidance_scale):
    m = Model.load(lv_path, device="cpu")
    calls = _counting(m)
    got = sample(
        m, sampler="ddpm", steps=STEPS, n=5, seed=4, raw=False, variance="learned_range", guidance_scale=guidance_scale
    )
    want = _reference(lv_path, 5, 4, guidance_scale=guidance_scale)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    assert calls == [5 if guidance_scale == 1.0 else 10] * STEPS  # one network call per step, v included
    small = sample(m, sampler="ddpm", steps=STEPS, n=5, seed=4, raw=False, guidance_scale=guidance_scale)
    assert not np.allclose(small, got)  # the variance half is actually used


def test_batches_and_inpainting(lv_path):
    m = Model.load(lv_path, device="cpu")
    one = sample(m, sampler="ddpm", steps=STEPS, n=6, seed=1, variance="learned_range")
    many = sample(m, sampler="ddpm", steps=STEPS, n=6, seed=1, batch_size=4, variance="learned_range")
    np.testing.assert_allclose(many, one, rtol=0, atol=1e-6)
    calls = _counting(m)
    out = sample(
        m,
        sampler="ddpm",
        steps=STEPS,
        n=3,
        seed=1,
        variance="learned_range",
        init=np.array([0.5, -0.5]),
        mask=np.array([1.0, 0.0]),
    )
    assert np.all(np.isfinite(out)) and len(calls) == STEPS
    np.testing.assert_allclose(out[:, 0], 0.5, atol=1e-9)


def test_cli_matches_api(lv_path, tmp_path):
    out = tmp_path / "s.npz"
    r = run_cli(
        lv_path,
        "--sampler",
        "ddpm",
        "--variance",
        "learned_range",
        "--steps",
        str(STEPS),
        "-n",
        "5",
        "--seed",
        "4",
        "--out",
        out,
        "--quiet",
    )
    assert r.returncode == 0, r.stderr
    m = Model.load(lv_path, device="cpu")
    want = m.to_raw(_reference(lv_path, 5, 4)).astype(np.float32)
    np.testing.assert_allclose(np.load(out)["samples"], want, rtol=0, atol=1e-6)
    assert "--variance-v" not in run_cli("--help").stdout


def test_learned_range_without_learned_variance_is_a_clear_error(models, tmp_path):
    m = Model.load(models["points"], device="cpu")
    with pytest.raises(ValueError, match="learned variance"):
        sample(m, sampler="ddpm", steps=4, n=2, variance="learned_range")
    with pytest.raises(ValueError, match="variance_v"):
        sample(m, sampler="ddpm", steps=4, n=2, variance="learned_range", variance_v=lambda x, t: 0 * x)
    r = run_cli(
        models["points"],
        "--sampler",
        "ddpm",
        "--variance",
        "learned_range",
        "--steps",
        "4",
        "-n",
        "2",
        "--out",
        tmp_path / "x.npz",
        "--quiet",
    )
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "learned variance" in errors[0] and "Traceback" not in r.stderr
