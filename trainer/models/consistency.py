"""A consistency model around any network: f(x, t) = a_skip x / alpha_t + a_out x0_hat(x, t), with f(x, t_0) = x.

Song et al. (2023), "Consistency Models", App. C: the boundary condition f(x, sigma_min) = x is built into the
parameterization. The wrapped network keeps its own parameterization (eps, v, x0, flow, an EDM-preconditioned
network, ...); its denoised estimate x0_hat is mixed with the input by `diffspec.trainer.distill.
consistency_boundary`, which for an EDM-preconditioned network is exactly the paper's c_skip / c_out. The wrapper's
own output is the consistency function itself, so its parameterization is x0 and any x0 sampler (`consistency`,
`lcm`) samples it. A student initialised from its teacher starts close to the teacher's denoiser.
No branch on values: it exports to ONNX.
"""

import torch
from diffspec.trainer.distill import consistency_function
from diffspec.trainer.parameterizations import x0_from_output
from torch import nn


class ConsistencyModel(nn.Module):
    def __init__(self, inner, schedule, *, parameterization, sigma_min, sigma_data=0.5):
        super().__init__()
        self.inner, self.schedule, self.parameterization = inner, schedule, str(parameterization)
        self.sigma_min, self.sigma_data = float(sigma_min), float(sigma_data)
        self.num_classes = getattr(inner, "num_classes", None)
        self.null_class = getattr(inner, "null_class", None)
        self.learned_variance = False

    def forward(self, x, t, y=None):
        t = t.to(torch.float32)
        xf = x.to(torch.float32)
        out = self.inner(x, t, y).to(torch.float32)
        x0_hat = x0_from_output(self.parameterization, out, xf, self.schedule.alpha(t), self.schedule.sigma(t))
        f = consistency_function(x0_hat, xf, t, self.schedule, sigma_min=self.sigma_min, sigma_data=self.sigma_data)
        return f.to(x.dtype)
