"""Networks diffusers trained -> the self-describing ONNX file, and diffspec-trained diffusers networks -> folders.

Every model is built here (random init, fixed seed) and saved with diffusers' own save_pretrained: no download.
Samples are compared with diffusers' own loops driven by the runtime's noise (diffusers' `randn_tensor` replaced
by the runtime's `SampleNoise`), so both sides see the same starting noise and the same draws.

Tolerances: the network graph against the torch module at 1e-5 (float32 rounding of a small network, measured
~1e-6); final samples at 1e-4 of max |x|: diffusers builds alphas_cumprod and steps in float32, the runtime's
samplers in float64 (about 6e-5 of max |x| for the same loop).
"""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from diffspec.export.adapters import NetworkAdapter
from diffspec.export.cli import main as export_main
from diffspec.export.diffusers_folder import card_for, export_diffusers, load_diffusers, read_diffusers_folder
from diffspec.reference import interop
from diffspec.reference.grids import leading
from diffspec.reference.modelcard import ModelCard
from diffspec.reference.parameterizations import x0_from_output
from diffspec.reference.samplers import SAMPLERS
from diffspec.runtime import Model, SampleNoise, sample
from diffusers import (
    DDIMPipeline,
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    DiTTransformer2DModel,
    UNet2DModel,
)

SAMPLE_TOL = 1e-4
NET_TOL = 1e-5
STEPS = 10


def _scaled_max(actual, desired):
    return float(np.max(np.abs(actual - desired)) / np.max(np.abs(desired)))


def _rel_l2(actual, desired):
    return float(np.linalg.norm(actual - desired) / np.linalg.norm(desired))


def _tiny_unet(**kw):
    return UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        attention_head_dim=8,
        **kw,
    )


def _session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class _Noise:
    """diffusers' randn_tensor replaced by a callable noise source: every draw diffusers makes comes from it."""

    def __init__(self, draw, scale_first=1.0):
        self.draw, self.scale_first, self.calls = draw, scale_first, 0

    def __call__(self, shape, generator=None, device=None, dtype=None, layout=None):
        scale = self.scale_first if self.calls == 0 else 1.0
        self.calls += 1
        return torch.from_numpy(scale * self.draw(tuple(shape))).to(dtype or torch.float32)


def _record_steps(scheduler):
    """Wrap scheduler.step so the last prev_sample (before the pipeline's clamp to [0, 1]) is kept."""
    seen = {}
    step = scheduler.step

    def recorded(*args, **kwargs):
        out = step(*args, **kwargs)
        seen["x"] = (out.prev_sample if hasattr(out, "prev_sample") else out[0]).double().numpy()
        return out

    scheduler.step = recorded
    return seen


# -------------------------------------------------------------------------------- UNet2DModel + DDIMScheduler
@pytest.fixture(scope="module")
def ddim(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddim")
    torch.manual_seed(0)
    unet = _tiny_unet().eval()
    scheduler = DDIMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction", clip_sample=False)
    DDIMPipeline(unet=unet, scheduler=scheduler).save_pretrained(root / "pipeline")
    out = root / "model.onnx"
    assert export_main([str(root / "pipeline"), "-o", str(out), "--seed", "1"]) == 0
    return {"root": root, "folder": root / "pipeline", "onnx": out, "unet": unet}


def test_unet_graph_equals_the_diffusers_module(ddim):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 1, 8, 8)).astype(np.float32)
    t = np.array([999.0, 431.5, 0.0], dtype=np.float32)  # a fractional time too: the graph takes float t
    (out,) = _session(ddim["onnx"]).run(["out"], {"x": x, "t": t})
    with torch.no_grad():
        ref = ddim["unet"](torch.from_numpy(x), torch.from_numpy(t)).sample.numpy()
    assert _rel_l2(out, ref) <= NET_TOL and _scaled_max(out, ref) <= NET_TOL


def test_unet_card_rebuilds_the_scheduler(ddim):
    card = Model.load(ddim["onnx"], device="cpu").card
    assert (card.parameterization, card.time_input, card.data.shape, card.data.range) == (
        "v",
        "t",
        (1, 8, 8),
        (-1.0, 1.0),
    )
    assert card.num_classes is None and card.null_class is None and not card.learned_variance
    _assert_same_alphas_cumprod(card, DDIMScheduler.from_pretrained(ddim["folder"], subfolder="scheduler"))


def _assert_same_alphas_cumprod(card, scheduler):
    T = scheduler.config.num_train_timesteps
    abar = card.reference_schedule().alpha(np.arange(T, dtype=np.float64)) ** 2
    # diffusers multiplies T float32 factors: up to T * eps32 / 2 relative rounding in its cumprod
    np.testing.assert_allclose(
        abar, scheduler.alphas_cumprod.double().numpy(), rtol=T * np.finfo(np.float32).eps, atol=0
    )


def test_ddim_runtime_equals_ddim_pipeline(ddim, monkeypatch):
    model = Model.load(ddim["onnx"], device="cpu")
    n, seed = 4, 7
    ours = sample(
        model, sampler="ddim", steps=STEPS, grid="leading", grid_options={"offset": 0}, n=n, seed=seed, raw=False
    )
    grid = leading(model.schedule, STEPS, offset=0)
    noise = _Noise(SampleNoise(seed, range(n)), scale_first=float(model.schedule.sigma(grid[0])))
    monkeypatch.setattr("diffusers.pipelines.ddim.pipeline_ddim.randn_tensor", noise)
    pipe = DDIMPipeline.from_pretrained(ddim["folder"])
    pipe.set_progress_bar_config(disable=True)
    seen = _record_steps(pipe.scheduler)
    pipe(batch_size=n, num_inference_steps=STEPS, eta=0.0, output_type="pt")
    assert noise.calls == 1 and ours.shape == seen["x"].shape
    assert _scaled_max(ours, seen["x"]) <= SAMPLE_TOL


# ------------------------------------------------------- class-conditional DiT + learned_range DDPMScheduler
@pytest.fixture(scope="module")
def dit(tmp_path_factory):
    root = tmp_path_factory.mktemp("dit")
    torch.manual_seed(1)
    net = DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=1,
        out_channels=2,
        num_layers=2,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=10,
    ).eval()
    folder = root / "pipeline"
    net.save_pretrained(folder / "transformer")
    DDPMScheduler(variance_type="learned_range", clip_sample=False).save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "DiTPipeline",
                "scheduler": ["diffusers", "DDPMScheduler"],
                "transformer": ["diffusers", "DiTTransformer2DModel"],
                "vae": [None, None],
            }
        )
    )
    out = root / "model.onnx"
    export_diffusers(folder, out, seed=1, log=lambda *_: None)
    return {"folder": folder, "onnx": out, "net": net}


def test_dit_graph_equals_the_diffusers_module(dit):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((4, 1, 8, 8)).astype(np.float32)
    t = np.array([999.0, 600.25, 17.0, 0.0], dtype=np.float32)
    y = np.array([0, 9, 10, 4], dtype=np.int64)  # 10 is the null class
    (out,) = _session(dit["onnx"]).run(["out"], {"x": x, "t": t, "y": y})
    with torch.no_grad():
        ref = dit["net"](torch.from_numpy(x), torch.from_numpy(t), class_labels=torch.from_numpy(y)).sample.numpy()
    assert out.shape == (4, 2, 8, 8)
    assert _rel_l2(out, ref) <= NET_TOL and _scaled_max(out, ref) <= NET_TOL


def test_dit_card(dit):
    card = Model.load(dit["onnx"], device="cpu").card
    assert (card.num_classes, card.null_class, card.learned_variance, card.parameterization) == (10, 10, True, "eps")
    _assert_same_alphas_cumprod(card, DDPMScheduler.from_pretrained(dit["folder"], subfolder="scheduler"))


def test_dit_guided_learned_range_ddpm_equals_the_diffusers_loop(dit, monkeypatch):
    """The DiT pipeline's guidance (on the eps channels, variance from the conditional half) with the full
    learned-range output given to DDPMScheduler.step; the runtime: ddpm with variance='learned_range'."""
    model = Model.load(dit["onnx"], device="cpu")
    n, seed, scale, labels = 4, 3, 3.0, [1, 3, 5, 7]
    ours = sample(
        model,
        sampler="ddpm",
        variance="learned_range",
        steps=STEPS,
        grid="leading",
        grid_options={"offset": 0},
        n=n,
        seed=seed,
        class_label=labels,
        guidance_scale=scale,
        raw=False,
    )

    noise = SampleNoise(seed, range(n))
    monkeypatch.setattr("diffusers.schedulers.scheduling_ddpm.randn_tensor", _Noise(noise))
    scheduler = DDPMScheduler.from_pretrained(dit["folder"], subfolder="scheduler")
    scheduler.set_timesteps(STEPS)
    sigma0 = float(model.schedule.sigma(scheduler.timesteps[0].item()))
    x = torch.from_numpy(sigma0 * noise((n, 1, 8, 8))).float()
    y = torch.tensor(labels + [10] * n)
    with torch.no_grad():
        for t in scheduler.timesteps:
            out = dit["net"](torch.cat([x, x]), t.expand(2 * n), class_labels=y).sample
            eps, rest = out[:, :1], out[:, 1:]
            cond, uncond = eps[:n], eps[n:]
            guided = torch.cat([uncond + scale * (cond - uncond), rest[:n]], dim=1)
            x = scheduler.step(guided, t, x).prev_sample
    assert _scaled_max(ours, x.double().numpy()) <= SAMPLE_TOL


# -------------------------------------------------------------------------------------------- bad input
def _run_cli(capsys, *argv):
    rc = export_main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def _model_folder(path, config):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_a_folder_of_neither_kind_names_the_files_looked_for(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    rc, err = _run_cli(capsys, tmp_path, "-o", tmp_path / "m.onnx")
    assert rc == 2
    for name in ("manifest.json", "model_index.json", "config.json"):
        assert name in err


def test_text_conditioned_and_unsupported_classes_are_refused(tmp_path, capsys):
    text = _model_folder(
        tmp_path / "text",
        {"_class_name": "UNet2DConditionModel", "sample_size": 8, "in_channels": 4, "cross_attention_dim": 32},
    )
    rc, err = _run_cli(capsys, text, "-o", tmp_path / "m.onnx", "--scheduler-config", tmp_path / "none.json")
    assert rc == 2 and "text-conditioned" in err and "encoder_hidden_states" in err
    other = _model_folder(tmp_path / "vq", {"_class_name": "VQModel"})
    rc, err = _run_cli(capsys, other, "-o", tmp_path / "m.onnx", "--scheduler-config", tmp_path / "none.json")
    assert rc == 2 and "'VQModel'" in err and "UNet2DModel" in err and "DiTTransformer2DModel" in err


def test_interop_refusals_pass_through(ddim, tmp_path, capsys):
    bad = {"_class_name": "DDIMScheduler", "beta_schedule": "exponential"}
    with pytest.raises(ValueError) as expected:
        interop.from_diffusers(bad, 4)
    (tmp_path / "scheduler_config.json").write_text(json.dumps(bad))
    rc, err = _run_cli(
        capsys, ddim["folder"], "-o", tmp_path / "m.onnx", "--scheduler-config", tmp_path / "scheduler_config.json"
    )
    assert rc == 2 and str(expected.value) in err
    assert not (tmp_path / "m.onnx").exists()


def test_model_folder_needs_a_scheduler_config(ddim, tmp_path, capsys):
    rc, err = _run_cli(capsys, ddim["folder"] / "unet", "-o", tmp_path / "m.onnx")
    assert rc == 2 and "--scheduler-config" in err
    card, _ = card_for(read_diffusers_folder(ddim["folder"] / "unet", scheduler_config=ddim["folder"] / "scheduler"))
    assert card == Model.load(ddim["onnx"], device="cpu").card  # the model folder's card is the pipeline's


def test_verify_only_and_components_outside_the_folder(ddim, tmp_path, capsys):
    assert export_main([str(ddim["folder"]), "-o", str(ddim["onnx"]), "--verify-only", "--seed", "2"]) == 0
    capsys.readouterr()
    folder = tmp_path / "pipeline"
    folder.mkdir()
    (folder / "model_index.json").write_text((ddim["folder"] / "model_index.json").read_text())
    (folder / "scheduler").symlink_to(ddim["folder"] / "scheduler")
    (folder / "unet").symlink_to(ddim["folder"] / "unet")  # a component that resolves outside the folder
    rc, err = _run_cli(capsys, folder, "-o", tmp_path / "m.onnx")
    assert rc == 2 and "outside the folder" in err


def test_pickle_weights_need_allow_pickle(ddim, tmp_path, capsys):
    folder = tmp_path / "unet_bin"
    ddim["unet"].save_pretrained(folder, safe_serialization=False)
    assert (folder / "diffusion_pytorch_model.bin").exists()
    sched = ddim["folder"] / "scheduler" / "scheduler_config.json"
    rc, err = _run_cli(capsys, folder, "-o", tmp_path / "m.onnx", "--scheduler-config", sched)
    assert rc == 2 and "pickle" in err and "arbitrary code" in err and "--allow-pickle" in err
    net, card, _ = load_diffusers(folder, scheduler_config=sched, allow_pickle=True)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3.0, 700.0])
    with torch.no_grad():
        assert torch.equal(net(x, t), ddim["unet"](x, t).sample)


def test_learned_variance_needs_a_learned_range_scheduler(tmp_path, capsys):
    folder = _model_folder(
        tmp_path / "unet", {"_class_name": "UNet2DModel", "sample_size": 8, "in_channels": 1, "out_channels": 2}
    )
    (tmp_path / "s.json").write_text(json.dumps({"_class_name": "DDPMScheduler"}))
    rc, err = _run_cli(capsys, folder, "-o", tmp_path / "m.onnx", "--scheduler-config", tmp_path / "s.json")
    assert rc == 2 and "learned_range" in err


def test_from_diffusers_refuses_edm_and_builds_flow_cards():
    with pytest.raises(ValueError, match="EDM"):
        ModelCard.from_diffusers({"_class_name": "EDMEulerScheduler"}, sample_size=8, in_channels=1)
    card = ModelCard.from_diffusers(
        {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0}, sample_size=8, in_channels=3
    )
    assert card.schedule == {"name": "flow", "shift": 3.0} and card.parameterization == "flow"


class _Recorder(torch.nn.Module):
    """A foreign forward(sample, timestep, labels) that returns a tuple and remembers what it was given."""

    def forward(self, sample, timestep, labels=None):
        self.seen = (timestep, labels)
        return (sample * 2.0,)


def test_network_adapter_signatures_and_time_scale(tmp_path):
    x, t, y = torch.randn(2, 1, 4, 4), torch.tensor([0.25, 0.5]), torch.tensor([1, 3])
    rec = _Recorder()
    out = NetworkAdapter(rec, class_labels="labels", time_scale=1000.0)(x, t, y)
    assert torch.equal(out, 2 * x) and torch.equal(rec.seen[0], 1000.0 * t) and torch.equal(rec.seen[1], y)
    NetworkAdapter(rec, class_labels="positional")(x, t, y)
    assert torch.equal(rec.seen[0], t) and torch.equal(rec.seen[1], y)
    with pytest.raises(ValueError, match="no such argument"):
        NetworkAdapter(rec, class_labels="class_labels")
    # a flow-matching scheduler: diffusers feeds timestep = num_train_timesteps * t, the adapter multiplies
    folder = _model_folder(tmp_path / "flow", {"_class_name": "UNet2DModel", "sample_size": 8, "in_channels": 3})
    source = read_diffusers_folder(
        folder, scheduler_config={"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000}
    )
    card, options = card_for(source)
    assert options == {"class_labels": None, "time_scale": 1000.0} and card.parameterization == "flow"


# ------------------------------------------------ round trip: diffspec-trained diffusers-unet2d -> diffusers
def test_round_trip_trained_unet_to_ddpm_pipeline(tmp_path, monkeypatch):
    from diffspec.trainer.checkpoint import load_for_inference
    from diffspec.trainer.config import TrainConfig
    from diffspec.trainer.loop import train

    cfg = TrainConfig(
        data="digits",
        output_dir=str(tmp_path / "run"),
        arch="diffusers-unet2d",
        model_kwargs={"block_out_channels": [8, 16], "norm_num_groups": 4, "attention_head_dim": 4},
        class_conditional=False,
        max_train_steps=3,
        train_batch_size=8,
        progress=False,
        num_validation_samples=2,
        num_inference_steps=2,
        save_diffusers=True,
    )
    result = train(cfg)
    folder = tmp_path / "run" / "diffusers"
    model, config = load_for_inference(result["checkpoint"])
    pipe = DDPMPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([999.0, 500.0, 0.0])
    with torch.no_grad():
        assert torch.equal(pipe.unet(x, t).sample, model(x, t))  # the same network, weight for weight

    n, seed = 3, 5
    noise = SampleNoise(seed, range(n))
    monkeypatch.setattr("diffusers.pipelines.ddpm.pipeline_ddpm.randn_tensor", _Noise(noise))
    monkeypatch.setattr("diffusers.schedulers.scheduling_ddpm.randn_tensor", _Noise(noise))
    seen = _record_steps(pipe.scheduler)
    pipe(batch_size=n, num_inference_steps=STEPS, output_type="pt")

    card = card_for(read_diffusers_folder(folder))[0]
    assert card.schedule == config["schedule"] and card.parameterization == config["parameterization"]
    data = config["data"]
    assert (card.data.range, card.data.scale, card.data.shift, card.data.name) == (
        tuple(data["range"]),
        data["scale"],
        data["shift"],
        data["name"],
    )
    schedule = card.reference_schedule()
    again = SampleNoise(seed, range(n))

    def denoise(x, t):
        with torch.no_grad():
            out = model(torch.from_numpy(x).float(), torch.full((x.shape[0],), t, dtype=torch.float32))
        return x0_from_output(config["parameterization"], out.double().numpy(), x, schedule.alpha(t), schedule.sigma(t))

    grid = leading(schedule, STEPS, offset=0)
    ours = SAMPLERS["ddpm"](denoise, again((n, 1, 8, 8)), grid, schedule, noise=again)
    assert _scaled_max(ours, seen["x"]) <= SAMPLE_TOL


def test_diffusers_dit_saves_parts_that_diffusers_loads(tmp_path):
    from diffspec.trainer.diffusers_io import check_save_diffusers, save_diffusers
    from diffspec.trainer.models import build_model

    torch.manual_seed(2)
    kwargs = {
        "in_channels": 1,
        "image_size": 8,
        "num_classes": 10,
        "num_layers": 1,
        "num_attention_heads": 2,
        "attention_head_dim": 8,
        "learned_variance": True,
    }
    model = build_model("diffusers-dit", **kwargs)
    x, t, y = torch.randn(3, 1, 8, 8), torch.tensor([999.0, 10.0, 0.0]), torch.tensor([0, 9, 10])
    model.train()
    with torch.no_grad():  # no hidden label dropout in training mode: the trainer drops labels itself
        assert torch.equal(model(x, t, y), model(x, t, y))
    schedule = {"name": "linear", "T": 1000, "beta_start": 0.0001, "beta_end": 0.02, "rescale_zero_snr": False}
    folder = save_diffusers(model.eval(), tmp_path / "dit", schedule=schedule, parameterization="eps")
    net = DiTTransformer2DModel.from_pretrained(folder, subfolder="transformer")
    scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
    with torch.no_grad():
        assert torch.equal(net(x, t, class_labels=y).sample, model(x, t, y))
    assert scheduler.config.variance_type == "learned_range" and not scheduler.config.clip_sample
    card = card_for(read_diffusers_folder(folder))[0]
    assert (card.num_classes, card.null_class, card.learned_variance) == (10, 10, True)

    with pytest.raises(ValueError, match="--arch diffusers-unet2d or diffusers-dit"):
        check_save_diffusers("unet", kwargs, schedule, "eps")
    with pytest.raises(ValueError, match="discrete VP"):
        check_save_diffusers("diffusers-dit", kwargs, {"name": "edm"}, "eps")
    with pytest.raises(ValueError, match="time_scale"):
        check_save_diffusers("diffusers-dit", {**kwargs, "time_scale": 1000 / 999}, schedule, "eps")


def test_class_labels_and_the_null_class(tmp_path):
    ddpm = {"_class_name": "DDPMScheduler", "clip_sample": False}
    unet = {"_class_name": "UNet2DModel", "sample_size": 8, "in_channels": 1, "num_class_embeds": 11}
    source = read_diffusers_folder(_model_folder(tmp_path / "unet", unet), scheduler_config=ddpm)
    card, options = card_for(source)  # every index is a class: no guidance
    assert (card.num_classes, card.null_class, options["class_labels"]) == (11, None, "class_labels")
    card, _ = card_for(source, null_class=10)  # the last label named as "no label"
    assert (card.num_classes, card.null_class) == (10, 10)
    with pytest.raises(ValueError, match="num_class_embeds - 1 = 10"):
        card_for(source, null_class=5)
    recorded = {**unet, "_diffspec": {"null_class": 10}}  # what --save-diffusers writes
    source = read_diffusers_folder(_model_folder(tmp_path / "saved", recorded), scheduler_config=ddpm)
    assert (card_for(source)[0].num_classes, card_for(source)[0].null_class) == (10, 10)
    dit = {"_class_name": "DiTTransformer2DModel", "sample_size": 8, "in_channels": 4, "num_embeds_ada_norm": 1000}
    source = read_diffusers_folder(_model_folder(tmp_path / "dit", dit), scheduler_config=ddpm)
    assert (card_for(source)[0].num_classes, card_for(source)[0].null_class) == (1000, 1000)
    with pytest.raises(ValueError, match="null class is 1000"):
        card_for(source, null_class=999)


def test_reading_a_folder_and_its_card_needs_no_torch(ddim):
    """Classifying a folder and building its card read JSON only; torch is imported to load weights."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'diffusers'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from diffspec.export.diffusers_folder import card_for, folder_kind, read_diffusers_folder\n"
        f"folder = {str(ddim['folder'])!r}\n"
        "print(folder_kind(folder), card_for(read_diffusers_folder(folder))[0].parameterization)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["diffusers-pipeline", "v"]


def test_trainer_refuses_what_diffusers_cannot_hold(tmp_path, capsys):
    from diffspec.trainer.cli import main as train_main

    common = ["--max-train-steps", "1", "--no-progress"]
    rc = train_main(
        ["--data", "digits", "--arch", "unet", "--save-diffusers", "--output-dir", str(tmp_path / "a")] + common
    )
    err = capsys.readouterr().err
    assert rc == 2 and "--save-diffusers needs --arch diffusers-unet2d or diffusers-dit" in err
    rc = train_main(["--data", "moons", "--arch", "diffusers-unet2d", "--output-dir", str(tmp_path / "b")] + common)
    err = capsys.readouterr().err
    assert rc == 2 and "2-D image models" in err and "Traceback" not in err
    rc = train_main(
        [
            "--data",
            "digits",
            "--arch",
            "diffusers-unet2d",
            "--save-diffusers",
            "--schedule",
            "edm",
            "--output-dir",
            str(tmp_path / "c"),
        ]
        + common
    )
    err = capsys.readouterr().err
    assert rc == 2 and "discrete VP" in err
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").glob("checkpoint-*"))


def test_flow_matching_network_runs_in_the_schedules_own_time(tmp_path):
    """FlowMatchEuler feeds the network timestep = 1000 sigma; the graph takes t = sigma and scales it inside."""
    from diffspec.runtime import make_denoiser
    from diffusers import FlowMatchEulerDiscreteScheduler

    torch.manual_seed(3)
    unet = UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    ).eval()
    unet.save_pretrained(tmp_path / "unet")
    config = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000}
    (tmp_path / "scheduler_config.json").write_text(json.dumps(config))
    export_diffusers(
        tmp_path / "unet",
        tmp_path / "flow.onnx",
        scheduler_config=tmp_path / "scheduler_config.json",
        seed=1,
        log=lambda *_: None,
    )
    model = Model.load(tmp_path / "flow.onnx", device="cpu")
    assert (model.card.schedule["name"], model.card.parameterization) == ("flow", "flow")

    x = np.random.default_rng(13).standard_normal((2, 1, 8, 8)).astype(np.float32)
    t = np.array([0.75, 0.001], dtype=np.float32)
    (out,) = _session(tmp_path / "flow.onnx").run(["out"], {"x": x, "t": t})
    with torch.no_grad():
        ref = unet(torch.from_numpy(x), 1000 * torch.from_numpy(t)).sample.numpy()
    assert _rel_l2(out, ref) <= NET_TOL and _scaled_max(out, ref) <= NET_TOL

    scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)
    scheduler.set_timesteps(STEPS)
    x_T = np.random.default_rng(4).standard_normal((3, 1, 8, 8))
    grid = scheduler.sigmas.double().numpy()  # the scheduler's own sigmas, ending at 0: t = sigma
    ours = SAMPLERS["flow_euler"](make_denoiser(model), x_T, grid, model.schedule)
    x_d = torch.from_numpy(x_T).float()
    with torch.no_grad():
        for step_t in scheduler.timesteps:
            x_d = scheduler.step(unet(x_d, step_t.expand(3)).sample, step_t, x_d).prev_sample
    assert _scaled_max(ours, x_d.double().numpy()) <= SAMPLE_TOL
