"""Few-step students: the trainer's distillation math against the reference (float64, rounding level), and short
CPU runs of every procedure on moons whose student beats the same network untrained at the same number of steps."""

import json

import numpy as np
import pytest
import torch
from _twin import reference_schedules, torch_oracle, twin
from diffspec.reference import distillation as RD
from diffspec.reference.oracles import standard_mixture_2d
from diffspec.trainer import distill as TD
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_budget import examples

RTOL = 1e-12


def _close(actual, desired, *, scale=1.0):
    actual = actual.detach().cpu().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    np.testing.assert_allclose(actual, desired, rtol=RTOL, atol=1e-12 * scale)


def _noisy_times(ref, u, n):
    """n times in the schedule's noisy range [t_eps, t_max], spread by u in [0, 1]."""
    lo, hi = float(ref.t_eps), float(ref.t_max)
    lo = lo + 1e-3 * (hi - lo) if ref.sigma(lo) == 0 else lo
    return lo + (hi - lo) * np.linspace(u, 1.0, n) ** 2


@given(ref=reference_schedules(), u=st.floats(0.0, 1.0), seed=st.integers(0, 2**16), sigma_data=st.floats(0.2, 1.0))
def test_consistency_function_twin(ref, u, seed, sigma_data):
    sch = twin(ref)
    t = _noisy_times(ref, u, 6)
    t = t[np.isfinite(ref.sigma_ve(t)) & (ref.alpha(t) > 0)]
    if len(t) == 0:
        return
    sigma_min = float(np.min(ref.sigma_ve(t)))
    rng = np.random.default_rng(seed)
    x, x0_hat = rng.standard_normal((len(t), 3)), rng.standard_normal((len(t), 3))
    want = RD.consistency_function(x0_hat, x, t, ref, sigma_min=sigma_min, sigma_data=sigma_data)
    got = TD.consistency_function(
        torch.from_numpy(x0_hat),
        torch.from_numpy(x),
        torch.from_numpy(t),
        sch,
        sigma_min=sigma_min,
        sigma_data=sigma_data,
    )
    # f reads sigma_ve through a boundary layer sigma_data wide (|d c_skip / d sigma_ve| <= 0.65 / sigma_data, the
    # rest of a_skip and a_out move by at most 2 |d sigma_ve| / sigma_ve) and scales x by 1 / alpha; the twins'
    # schedules differ there by their rounding, which next to a zero-terminal-SNR end (alpha ~ 3e-16, sigma_ve ~
    # 3e15, 31 eps apart) is wider than the layer itself, and f carries that difference through.
    tt = torch.from_numpy(t)
    s_ref, a_ref = ref.sigma_ve(t), ref.alpha(t)
    ds, da = np.abs(sch.sigma_ve(tt).numpy() - s_ref), np.abs(sch.alpha(tt).numpy() - a_ref)
    x_ve, x0 = np.abs(x / a_ref[:, None]).max(axis=1), np.abs(x0_hat).max(axis=1)
    drift = x_ve * (ds * (1 / sigma_data + 2 / s_ref) + da / a_ref) + x0 * 2 * ds / s_ref
    got = got.numpy()
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-12 * (x_ve.max() + 1) + drift.max())


@given(ref=reference_schedules(), n=st.integers(1, 60), grid=st.sampled_from(["karras", "uniform", "exponential"]))
def test_distillation_times_twin(ref, n, grid):
    try:
        want = RD.distillation_times(ref, n, grid=grid)
    except ValueError as err:
        with pytest.raises(ValueError, match=str(err).split(":")[0][:10]):
            TD.distillation_times(twin(ref), n, grid=grid)
        return
    _close(TD.distillation_times(twin(ref), n, grid=grid), want, scale=float(ref.t_max))


@settings(max_examples=examples(20))
@given(
    name=st.sampled_from(["linear", "vp", "edm", "flow"]),
    u=st.floats(0.1, 0.9),
    h=st.floats(0.01, 0.5),
    sampler=st.sampled_from(["ddim", "heun", "dpmpp_2m", "euler", "flow_euler", "flow_heun"]),
    seed=st.integers(0, 2**16),
)
def test_teacher_step_twin(name, u, h, sampler, seed):
    from diffspec.reference.schedules import make_schedule

    ref = make_schedule(name)
    if sampler.startswith("flow") != (name == "flow"):
        return
    t = float(_noisy_times(ref, u, 1)[0])
    t_next = t - h * (t - float(ref.t_eps))
    mix = standard_mixture_2d()
    x = mix.sample_xt(16, ref.alpha(t), ref.sigma(t), np.random.default_rng(seed))
    want = RD.teacher_step(mix.denoiser(ref), x, t, t_next, ref, sampler=sampler)
    got = TD.teacher_step(torch_oracle(mix, ref), torch.from_numpy(x), t, t_next, twin(ref), sampler=sampler)
    _close(got, want, scale=1e3 * (1.0 + float(np.max(np.abs(x)))))


@given(ref=reference_schedules(), u=st.floats(0.0, 1.0), v=st.floats(0.05, 0.95), seed=st.integers(0, 2**16))
def test_consistency_training_pair_twin(ref, u, v, seed):
    t = _noisy_times(ref, u, 4)
    t_next = t - v * (t - float(ref.t_eps))
    if not np.all(t_next < t):
        return
    rng = np.random.default_rng(seed)
    x0, z = rng.standard_normal((4, 2)), rng.standard_normal((4, 2))
    want = RD.consistency_training_pair(x0, z, t, t_next, ref)
    got = TD.consistency_training_pair(
        torch.from_numpy(x0), torch.from_numpy(z), torch.from_numpy(t), torch.from_numpy(t_next), twin(ref)
    )
    for g, w in zip(got, want, strict=True):
        _close(g, w, scale=10.0 + float(np.max(np.abs(w))))


@given(name=st.sampled_from(["edm", "linear", "vp", "ve"]), k=st.integers(0, 500))
def test_ict_times_twin(name, k):
    from diffspec.reference.schedules import make_schedule

    ref = make_schedule(name)
    want_t, want_s = RD.ict_times(ref, k, 500)
    got_t, got_s = TD.ict_times(twin(ref), k, 500)
    np.testing.assert_allclose(got_s.numpy(), want_s, rtol=1e-12)
    np.testing.assert_allclose(got_t.numpy(), want_t, rtol=1e-9, atol=1e-9 * float(ref.t_max))


@given(ref=reference_schedules(), steps=st.sampled_from([1, 2, 4, 8, 64]), seed=st.integers(0, 2**16))
def test_progressive_grid_weight_and_loss_twin(ref, steps, seed):
    sch = twin(ref)
    grid = RD.progressive_grid(ref, steps)
    _close(TD.progressive_grid(sch, steps), grid, scale=float(abs(ref.t_max)) + 1.0)
    t = grid[:-1]
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((len(t), 3)), rng.standard_normal((len(t), 3))
    want = RD.progressive_distillation_loss(a, b, t, ref)
    got = TD.progressive_distillation_loss(torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(t), sch)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-9)


@settings(max_examples=examples(20))
@given(
    name=st.sampled_from(["linear", "vp", "edm", "flow"]),
    steps=st.sampled_from([1, 2, 8]),
    i=st.integers(0, 7),
    sampler=st.sampled_from(["ddim", "heun", "dpmpp_2m", "flow_euler"]),
    substeps=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_progressive_teacher_target_twin(name, steps, i, sampler, substeps, seed):
    from diffspec.reference.schedules import make_schedule

    ref = make_schedule(name)
    if sampler.startswith("flow") != (name == "flow"):
        return
    grid = RD.progressive_grid(ref, steps)
    t, t_next = float(grid[i % steps]), float(grid[i % steps + 1])
    mix = standard_mixture_2d()
    x = mix.sample_xt(16, ref.alpha(t), ref.sigma(t), np.random.default_rng(seed))
    want = RD.progressive_teacher_target(mix.denoiser(ref), x, t, t_next, ref, sampler=sampler, substeps=substeps)
    got = TD.progressive_teacher_target(
        torch_oracle(mix, ref), torch.from_numpy(x), t, t_next, twin(ref), sampler=sampler, substeps=substeps
    )
    _close(got, want, scale=1e3 * (1.0 + float(np.max(np.abs(want)))))


@pytest.mark.parametrize(("teacher", "student"), [(64, 4), (8, 1), (2, 1), (64, 3), (64, 64), (48, 3), (6, 3)])
def test_progressive_rounds_twin(teacher, student):
    try:
        want = RD.progressive_rounds(teacher, student)
    except ValueError:
        with pytest.raises(ValueError, match="student-steps"):
            TD.progressive_rounds(teacher, student)
        return
    assert TD.progressive_rounds(teacher, student) == want


@settings(max_examples=examples(10))
@given(steps=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_reflow_pairs_and_straightness_twin(steps, seed):
    from diffspec.reference.schedules import make_schedule

    ref = make_schedule("flow")
    mix = standard_mixture_2d()
    z = np.random.default_rng(seed).standard_normal((32, 2))
    want = RD.reflow_pairs(mix.denoiser(ref), z, ref, steps=steps)
    got = TD.reflow_pairs(torch_oracle(mix, ref), torch.from_numpy(z), twin(ref), steps=steps)
    _close(got, want, scale=100.0)
    want_x, want_s = RD.straightness(mix.denoiser(ref), z, ref, steps=steps)
    got_x, got_s = TD.straightness(torch_oracle(mix, ref), torch.from_numpy(z), twin(ref), steps=steps)
    _close(got_x, want_x, scale=100.0)
    np.testing.assert_allclose(got_s.numpy(), want_s, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------
# Short CPU runs of every procedure: the student beats the same network untrained at the same number of steps
# ---------------------------------------------------------------------------------------------------------

TINY = '{"hidden": 64, "depth": 2, "freq_dim": 16}'


def _train(tmp, name, *extra):
    from diffspec.trainer.cli import main

    out = tmp / name
    assert main(["--data", "moons", "--output-dir", str(out), "--no-progress", *extra]) == 0
    return out


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """A v-prediction teacher on DDPM's linear schedule and a flow-matching teacher: tiny MLPs, 1,000 steps each."""
    tmp = tmp_path_factory.mktemp("teachers")
    common = ["--max-train-steps", "1000", "--model-kwargs", TINY, "--validation-steps", "1000000"]
    v = ["--schedule", "linear", "--prediction-type", "v"]
    return {
        "v": _train(tmp, "v", *common, *v),
        "flow": _train(tmp, "flow", *common, "--schedule", "flow", "--prediction-type", "flow"),
    }


def _score(x_model, config):
    """Standardized sliced W2 to fresh moons (n = 2,000) of model-space samples."""
    d = config["data"]
    return _score_raw((x_model - d["shift"]) / d["scale"])


def _score_raw(raw):
    from diffspec.reference.metrics import sliced_wasserstein
    from diffspec.trainer.data import TOYS

    ref = np.asarray(TOYS["moons"](len(raw), 12345), dtype=np.float64)
    mean, std = ref.mean(0), ref.std(0)
    return sliced_wasserstein(
        (raw - mean) / std, (ref - mean) / std, rng=np.random.default_rng(0), num_projections=64, p=2
    )


def _sample(model, config, sampler, steps):
    from diffspec.trainer.distill_loop import sample_model

    return sample_model(model, config, n=2000, sampler=sampler, steps=steps, seed=1)


def _student(tmp, *args):
    from diffspec.trainer.checkpoint import find_latest, load_for_inference
    from diffspec.trainer.cli import main

    out = tmp / "student"
    assert (
        main(
            [
                "--data",
                "moons",
                "--output-dir",
                str(out),
                "--no-progress",
                "--train-batch-size",
                "128",
                "--logging-steps",
                "50",
                *args,
            ]
        )
        == 0
    )
    return load_for_inference(find_latest(out))


@pytest.fixture(scope="module")
def cd_student(teachers, tmp_path_factory):
    """(model, config, run folder) of a consistency-distilled student of the v teacher, 400 steps."""
    tmp = tmp_path_factory.mktemp("cd")
    model, config = _student(
        tmp, "--distill", "consistency", "--teacher", str(teachers["v"]), "--max-train-steps", "400"
    )
    return model, config, tmp / "student"


def test_consistency_distillation_beats_its_untrained_student(teachers, cd_student):
    from diffspec.trainer.checkpoint import find_latest, load_for_inference, read_config
    from diffspec.trainer.distill_loop import _consistency_student

    model, config, _ = cd_student
    assert config["model"]["arch"] == "consistency" and config["parameterization"] == "x0"
    assert config["student"]["procedure"] == "consistency_distillation"
    teacher, tconfig = load_for_inference(find_latest(teachers["v"]))
    untrained, _ = _consistency_student(
        teacher, read_config(find_latest(teachers["v"])), config["model"]["kwargs"]["sigma_min"]
    )
    for steps in (1, 2):
        trained = _score(_sample(model, config, "consistency", steps), config)
        before = _score(_sample(untrained.eval(), config, "consistency", steps), config)
        assert trained < 0.5 * before, (steps, trained, before)


def test_consistency_training_beats_its_untrained_student(tmp_path):
    from diffspec.trainer.models import build_model

    model, config = _student(tmp_path, "--objective", "consistency", "--max-train-steps", "400")
    assert config["student"]["procedure"] == "consistency_training" and config["schedule"]["name"] == "edm"
    torch.manual_seed(0)
    untrained = build_model(config["model"]["arch"], **config["model"]["kwargs"]).eval()
    trained = _score(_sample(model, config, "consistency", 1), config)
    before = _score(_sample(untrained, config, "consistency", 1), config)
    assert trained < 0.5 * before, (trained, before)


def test_progressive_distillation_beats_its_teacher_at_the_same_steps(teachers, tmp_path):
    from diffspec.trainer.checkpoint import find_latest, load_for_inference

    model, config = _student(
        tmp_path,
        "--distill",
        "progressive",
        "--teacher",
        str(teachers["v"]),
        "--teacher-steps",
        "4",
        "--student-steps",
        "1",
        "--max-train-steps",
        "150",
    )
    assert config["student"]["rounds"] == [2, 1] and config["parameterization"] == "v"
    teacher, tconfig = load_for_inference(find_latest(teachers["v"]))
    trained = _score(_sample(model, config, "ddim", 1), config)
    before = _score(_sample(teacher, tconfig, "ddim", 1), tconfig)  # the first round's initialisation
    assert trained < 0.75 * before, (trained, before)  # 1 step after 2 short rounds: about 0.6 measured


def test_reflow_straightens_and_beats_its_teacher_at_one_step(teachers, tmp_path):
    from diffspec.trainer.checkpoint import find_latest, load_for_inference

    model, config = _student(
        tmp_path,
        "--distill",
        "reflow",
        "--teacher",
        str(teachers["flow"]),
        "--max-train-steps",
        "200",
        "--num-pairs",
        "4000",
    )
    info = config["student"]
    assert info["straightness_student"] < 0.5 * info["straightness_teacher"], info
    teacher, tconfig = load_for_inference(find_latest(teachers["flow"]))
    trained = _score(_sample(model, config, "flow_euler", 1), config)
    before = _score(_sample(teacher, tconfig, "flow_euler", 1), tconfig)
    assert trained < 0.5 * before, (trained, before)


def test_export_and_sample_round_trip(cd_student, tmp_path):
    """A CD student exports like any checkpoint (card: x0, the consistency scalings, the student entry) and the
    runtime samples it with `--sampler consistency` as well as the trainer does."""
    import subprocess
    import sys

    from diffspec.trainer.checkpoint import find_latest

    model, config, run_dir = cd_student
    onnx_path, npy = tmp_path / "student.onnx", tmp_path / "samples.npy"
    ckpt_dir = find_latest(run_dir)
    run = [sys.executable, "-m"]
    done = subprocess.run(
        [*run, "diffspec.export", str(ckpt_dir), "-o", str(onnx_path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    info = subprocess.run([*run, "diffspec.runtime", str(onnx_path), "--info"], capture_output=True, text=True)
    assert info.returncode == 0 and "consistency_distillation" in info.stdout + info.stderr, info.stdout
    recipe = json.loads(info.stdout)["default_sampling"]
    t_end = recipe["grid_options"].pop("t_end")  # the student's boundary: sigma_ve(t_end) = its sigma_min
    assert recipe == {"sampler": "consistency", "steps": 2, "grid": "karras", "grid_options": {}}, recipe
    assert abs(t_end) < 1e-9 and config["student"]["grid_for_sampling"] == "karras"
    # nothing named: the card's sampler, steps and grid (consistency, 2, Karras down to the boundary)
    got = subprocess.run(
        [*run, "diffspec.runtime", str(onnx_path), "-n", "2000", "--seed", "3", "--out", str(npy), "--no-progress"],
        capture_output=True,
        text=True,
    )
    assert got.returncode == 0, got.stderr
    assert "consistency, 2 steps, grid karras, t_end=" in got.stdout, got.stdout
    runtime_score = _score_raw(np.load(npy).astype(np.float64))
    trainer_score = _score(_sample(model, config, "consistency", 2), config)
    assert runtime_score < 1.5 * trainer_score + 0.02, (runtime_score, trainer_score)
    # the pipeline graph too: the whole 2-step sampler in the file, checked against the runtime on write
    pipe = tmp_path / "pipeline.onnx"
    done = subprocess.run(
        [*run, "diffspec.export", "--pipeline", str(onnx_path), "-o", str(pipe)], capture_output=True, text=True
    )
    assert done.returncode == 0 and "consistency, 2 steps, grid karras" in done.stdout, done.stdout + done.stderr


def test_bad_input_is_one_line_naming_what_is_needed(teachers, tmp_path, capsys):
    import shutil

    from diffspec.trainer.checkpoint import find_latest
    from diffspec.trainer.cli import main

    broken = tmp_path / "broken"
    shutil.copytree(find_latest(teachers["v"]), broken)
    (broken / "manifest.json").unlink()
    cases = [
        (["--distill", "consistency"], "needs --teacher"),
        (["--distill", "reflow", "--teacher", str(teachers["v"])], "needs a flow-matching teacher"),
        (["--distill", "progressive", "--teacher", str(teachers["v"]), "--student-steps", "3"], "--student-steps=3"),
        (
            [
                "--distill",
                "progressive",
                "--teacher",
                str(teachers["v"]),
                "--teacher-steps",
                "64",
                "--student-steps",
                "64",
            ],
            "--student-steps=64",
        ),
        (["--distill", "consistency", "--teacher", str(broken)], "incomplete checkpoint"),
        (["--distill", "consistency", "--teacher", str(tmp_path / "missing")], "no such checkpoint folder"),
        (["--distill", "consistency", "--teacher", str(teachers["v"]), "--teacher-sampler", "ddpm"], "deterministic"),
        (["--distill", "distil", "--teacher", str(teachers["v"])], "expected one of consistency, progressive"),
        (["--objective", "consistency", "--teacher", str(teachers["v"])], "--teacher is used with --distill"),
    ]
    for args, message in cases:
        assert main(["--output-dir", str(tmp_path / "out"), "--no-progress", *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (args, err)


# ---------------------------------------------------------------------------------------------------------
# Resume: a run interrupted after any complete checkpoint continues bit for bit
# ---------------------------------------------------------------------------------------------------------

RESUME_CASES = {
    "consistency": (["--distill", "consistency", "--teacher", "{v}"], ["target"], [2]),
    "consistency_training": (["--objective", "consistency"], [], [2]),
    # two rounds (4 -> 2 -> 1 steps) of 6 steps: mid-round 1, its end, mid-round 2 (teacher = round 1's EMA)
    "progressive": (
        ["--distill", "progressive", "--teacher", "{v}", "--teacher-steps", "4", "--student-steps", "1"],
        [],
        [2, 6, 8],
    ),
    "reflow": (["--distill", "reflow", "--teacher", "{flow}", "--num-pairs", "64", "--teacher-steps", "4"], [], [4]),
}


def _tensors_of(ckpt_dir, names):
    from safetensors.torch import load_file

    return {n: load_file(str(ckpt_dir / f"{n}.safetensors")) for n in names}


@pytest.mark.parametrize("procedure", sorted(RESUME_CASES))
def test_an_interrupted_run_resumes_bit_for_bit(procedure, teachers, tmp_path):
    """Checkpoints every 2 steps; the run is cut after checkpoint S (later ones gone, the next one left half-written,
    as a crash mid-save leaves it) and continued with --resume-from-checkpoint latest: its final student, EMA,
    optimizer state and procedure state equal the uninterrupted run's bit for bit, and it did start at S."""
    import json
    import shutil

    from diffspec.trainer.checkpoint import MANIFEST, list_checkpoints
    from diffspec.trainer.cli import main

    args, extra_files, cuts = RESUME_CASES[procedure]
    args = [a.format(v=teachers["v"], flow=teachers["flow"]) for a in args]
    common = ["--data", "moons", "--no-progress", "--max-train-steps", "6", "--checkpointing-steps", "2"]
    common += ["--train-batch-size", "32", "--logging-steps", "1", *args]
    whole = tmp_path / "whole"
    assert main(["--output-dir", str(whole), *common]) == 0
    final = list_checkpoints(whole)[-1][1].name
    names = ["model", "ema", "optimizer", *extra_files]
    want = _tensors_of(whole / final, names)
    for cut in cuts:
        run = tmp_path / f"cut{cut}"
        shutil.copytree(whole, run)
        later = [p for s, p in list_checkpoints(run) if s > cut]
        for p in later[1:]:
            shutil.rmtree(p)
        (later[0] / MANIFEST).unlink()  # the save after S was interrupted: incomplete, skipped, moved aside
        (run / "log.jsonl").write_text("")
        assert main(["--output-dir", str(run), *common, "--resume-from-checkpoint", "latest"]) == 0
        got = _tensors_of(run / final, names)
        for name in names:
            assert got[name].keys() == want[name].keys()
            for k in want[name]:
                assert torch.equal(got[name][k], want[name][k]), (cut, name, k)
        log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        assert log[0]["phase"] == "resume" and log[0]["step"] == cut, log[0]
        assert sum("loss" in r for r in log) == list_checkpoints(whole)[-1][0] - cut  # one record per step run


def test_resume_refuses_a_checkpoint_of_other_settings(teachers, tmp_path, capsys):
    from diffspec.trainer.cli import main

    out = tmp_path / "run"
    common = ["--data", "moons", "--output-dir", str(out), "--no-progress", "--train-batch-size", "32"]
    cd = ["--distill", "consistency", "--teacher", str(teachers["v"])]
    assert main([*common, *cd, "--max-train-steps", "2"]) == 0
    capsys.readouterr()
    cases = [
        ([*cd, "--max-train-steps", "4"], "its max_train_steps is 2 but this run has 4"),
        (["--objective", "consistency", "--max-train-steps", "2"], "not a checkpoint of a --distill consistency"),
    ]
    for args, message in cases:
        assert main([*common, *args, "--resume-from-checkpoint", "latest"]) == 2, args
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (args, err)
    missing = ["--resume-from-checkpoint", str(tmp_path / "nowhere")]
    assert main([*common, *cd, "--max-train-steps", "2", *missing]) == 2
    assert "no such checkpoint folder" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------
# Class-conditional teachers
# ---------------------------------------------------------------------------------------------------------


def _which_moon(raw):
    """The label (0 upper, 1 lower moon) of the nearest of 4,000 fresh labelled moons."""
    from sklearn.datasets import make_moons

    ref, labels = make_moons(n_samples=4000, noise=0.05, random_state=7)
    return labels[((raw[:, None, :] - ref[None, :, :]) ** 2).sum(-1).argmin(1)]


@pytest.fixture(scope="module")
def labelled_teacher(tmp_path_factory):
    """A class-conditional v-prediction teacher on moons labelled by moon (an .npz with x and y), label dropout 0.1."""
    from sklearn.datasets import make_moons

    tmp = tmp_path_factory.mktemp("labelled")
    x, y = make_moons(n_samples=4000, noise=0.05, random_state=0)
    data = tmp / "moons_labelled.npz"
    np.savez(data, x=x, y=y.astype(np.int64))
    common = ["--max-train-steps", "600", "--model-kwargs", TINY, "--validation-steps", "1000000", "--threads", "1"]
    from diffspec.trainer.cli import main

    out = tmp / "teacher"
    args = ["--data", str(data), "--output-dir", str(out), "--no-progress", *common]
    assert main([*args, "--schedule", "linear", "--prediction-type", "v"]) == 0
    return data, out


def test_a_class_conditional_teacher_distils_into_a_class_conditional_student(labelled_teacher, tmp_path):
    """CD with the teacher's ODE under guidance 3: the student is class-conditional (card, export, runtime), its
    2-step samples land on the moon they were asked for, more often than the same network untrained does, and the
    runtime's samples of the exported student do as well as the trainer's."""
    import subprocess
    import sys

    from diffspec.trainer.checkpoint import find_latest, load_for_inference, read_config
    from diffspec.trainer.cli import main
    from diffspec.trainer.distill_loop import _consistency_student, sample_model

    data, teacher = labelled_teacher
    out = tmp_path / "student"
    args = ["--data", str(data), "--output-dir", str(out), "--no-progress", "--train-batch-size", "128"]
    args += ["--distill", "consistency", "--teacher", str(teacher), "--teacher-guidance-scale", "3"]
    assert main([*args, "--max-train-steps", "200"]) == 0
    model, config = load_for_inference(find_latest(out))
    assert config["num_classes"] == 2 and config["null_class"] == 2
    assert config["student"]["teacher_guidance_scale"] == 3.0
    labels = np.arange(1000) % 2

    def accuracy(m):
        x = sample_model(m, config, n=1000, sampler="consistency", steps=2, seed=1, labels=labels)
        d = config["data"]
        return float(np.mean(_which_moon((x - d["shift"]) / d["scale"]) == labels))

    tmodel, _ = load_for_inference(find_latest(teacher))
    untrained, _ = _consistency_student(
        tmodel, read_config(find_latest(teacher)), config["model"]["kwargs"]["sigma_min"]
    )
    trained, before = accuracy(model), accuracy(untrained.eval())
    assert trained > 0.95 and trained > before + 0.05, (trained, before)

    onnx_path, npz = tmp_path / "student.onnx", tmp_path / "samples.npz"
    run = [sys.executable, "-m"]
    done = subprocess.run([*run, "diffspec.export", str(find_latest(out)), "-o", str(onnx_path)], capture_output=True)
    assert done.returncode == 0, done.stderr
    sample = [*run, "diffspec.runtime", str(onnx_path), "-n", "1000", "--seed", "3", "--out", str(npz), "--no-progress"]
    got = subprocess.run(sample, capture_output=True, text=True)
    assert got.returncode == 0, got.stderr
    saved = np.load(npz)
    assert set(np.unique(saved["labels"])) == {0, 1}
    runtime = float(np.mean(_which_moon(saved["samples"].astype(np.float64)) == saved["labels"]))
    assert runtime > 0.95, runtime


def test_class_conditional_bad_input(labelled_teacher, teachers, tmp_path, capsys):
    from diffspec.trainer.cli import main

    data, teacher = labelled_teacher
    cases = [
        (["--data", "moons", "--distill", "consistency", "--teacher", str(teacher)], "has no labels"),
        (
            ["--distill", "consistency", "--teacher", str(teachers["v"]), "--teacher-guidance-scale", "2"],
            "guidance needs a class-conditional teacher",
        ),
        (
            ["--data", str(data), "--distill", "progressive", "--teacher", str(teacher), "--teacher-substeps", "0"],
            "--teacher-substeps=0",
        ),
        (
            [
                "--data",
                str(data),
                "--distill",
                "consistency",
                "--teacher",
                str(teacher),
                "--teacher-guidance-scale",
                "nan",
            ],
            "--teacher-guidance-scale=nan",
        ),
    ]
    for args, message in cases:
        assert main(["--output-dir", str(tmp_path / "out"), "--no-progress", *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (args, err)
