"""diffspec.export: a trained network -> one self-describing, verified `.onnx` file.

    diffspec-export CHECKPOINT_DIR -o model.onnx [--no-ema] [--fp16] [--cfg-fused] [--dynamic-size] [--opset 18]

or from Python `export_checkpoint(ckpt_dir, path, ...)`, `export_model(model, card, path, ...)`, and
`verify(onnx_path, model_or_checkpoint_dir)` to re-check any exported file.

Networks diffspec did not train: `diffspec-export DIFFUSERS_FOLDER -o model.onnx [--scheduler-config FILE]` or
`export_diffusers(folder, path, ...)` for a diffusers pipeline or model folder (`diffspec.export.diffusers_folder`),
and `export_model(NetworkAdapter(module, ...), card, path)` for any torch module (docs/export-diffusers.md).

The whole sampler in the file: `diffspec-export --pipeline model.onnx -o sampler.onnx --sampler dpmpp_2m --steps 20`
(or a checkpoint with `--sampler`), `export_pipeline(network_path, path, sampler=..., steps=...)` in
`diffspec.export.pipeline` (docs/pipeline.md).

The file (docs/architecture.md): inputs `x` float32 [B, ...], `t` float32 [B], `y` int64 [B] (class-conditional
models), `guidance_scale` float32 [1] (fused-CFG graphs only); output `out` float32 shaped like x; a symbolic
batch axis; no random op. Metadata: `ModelCard.to_metadata()` (schedule, parameterization, time input, data
shape/range/scale/shift, classes and null class, cfg_fused, learned variance, precision, diffspec version,
training-config summary) plus `diffspec.export` (exporter, opset, weights ema/raw, torch and onnx versions),
which `ModelCard.from_metadata` ignores. `ModelCard.from_metadata(props).reference_schedule()` rebuilds the
schedule in one call.

Exporter choice: `torch.onnx.export(..., dynamo=True)` (torch.export + onnxscript), at opset 18 by default
(18-20 accepted). Measured on torch 2.13 for an MLP, an ADM-style UNet (GroupNorm, attention, classes) and a
DiT, both exporters work with a dynamic batch and match torch to ~3e-7 (scaled max error); the dynamo exporter
is chosen because it is torch's maintained path (the TorchScript exporter is deprecated), its graphs are 2-3x
smaller (UNet 120 vs 287 nodes, DiT 149 vs 460: no Constant/Identity/Cast/Mod clutter) and it takes dynamic
axes as torch.export constraints that it checks. It costs ~3 s per export instead of ~0.1 s; `exporter=
"torchscript"` (`--exporter torchscript`) remains as a fallback for networks torch.export cannot trace.
Opset 18 (onnxruntime >= 1.14) rather than 20: any onnxruntime runs it; at 18-20 GroupNorm stays decomposed
and attention is MatMul+Softmax, which onnxruntime's CUDA fusions expect.
"""

from diffspec.export.files import EXTERNAL_DATA_THRESHOLD, check_external_data, load_model_safely
from diffspec.export.pipeline import PipelineError, export_pipeline, exportable_samplers

try:
    import torch  # noqa: F401
except ImportError:  # onnx + onnxruntime only: a pipeline graph can still be built from an exported network
    _TORCH = False
else:
    _TORCH = True

if _TORCH:
    from diffspec.export.adapters import NetworkAdapter
    from diffspec.export.diffusers_folder import export_diffusers, load_diffusers
    from diffspec.export.exporter import (
        DEFAULT_OPSET,
        SUPPORTED_OPSETS,
        CfgFused,
        card_from_config,
        export_checkpoint,
        export_model,
        load_checkpoint,
        to_onnx,
    )
    from diffspec.export.fp16 import convert_to_fp16
    from diffspec.export.verify import TOLERANCES, Tolerance, VerificationError, VerifyReport, verify
else:

    def __getattr__(name):
        raise ImportError(
            f"diffspec.export.{name} needs torch, which is not installed: pip install "
            "'diffspec[export]' (without torch only export_pipeline, from an exported network, works)"
        )


__all__ = [
    "DEFAULT_OPSET",
    "EXTERNAL_DATA_THRESHOLD",
    "SUPPORTED_OPSETS",
    "TOLERANCES",
    "CfgFused",
    "NetworkAdapter",
    "Tolerance",
    "VerificationError",
    "VerifyReport",
    "card_from_config",
    "check_external_data",
    "convert_to_fp16",
    "export_checkpoint",
    "export_diffusers",
    "export_model",
    "load_checkpoint",
    "load_diffusers",
    "load_model_safely",
    "to_onnx",
    "verify",
    "PipelineError",
    "export_pipeline",
    "exportable_samplers",
]
