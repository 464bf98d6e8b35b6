"""EDM preconditioning (Karras et al. 2022, "Elucidating the Design Space...", Table 1 and eq. 7) around any
network, for any schedule.

With sigma = sigma_ve(t) = sigma(t) / alpha(t) and the VE variable x_ve = x / alpha(t) (x_t = alpha (x0 +
sigma_ve eps)), the wrapper returns the denoised estimate

    D(x, t) = c_skip x_ve + c_out F(c_in x_ve, c_noise)
    c_skip = sigma_data^2 / (sigma^2 + sigma_data^2),   c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2)
    c_in = 1 / sqrt(sigma^2 + sigma_data^2),            c_noise = log(sigma) / 4

so the wrapped model's parameterization is x0. The inner network receives c_noise as its time; give it a
`time_scale` (e.g. 250) so that c_noise in about [-1.6, 1.1] spreads over the sinusoidal frequencies.
All of this is computed in float32 from t (B,), with no branch on values: it exports to ONNX.
"""

import torch
from torch import nn


class EDMPrecond(nn.Module):
    def __init__(self, inner, schedule, *, sigma_data=0.5):
        super().__init__()
        self.inner, self.schedule, self.sigma_data = inner, schedule, float(sigma_data)
        self.num_classes = getattr(inner, "num_classes", None)
        self.null_class = getattr(inner, "null_class", None)
        self.learned_variance = False

    def forward(self, x, t, y=None):
        t = t.to(torch.float32)
        alpha, sigma = self.schedule.alpha(t), self.schedule.sigma(t)
        shape = (-1,) + (1,) * (x.ndim - 1)
        sigma_ve = (sigma / alpha).reshape(shape)
        alpha = alpha.reshape(shape)
        sd2 = self.sigma_data**2
        c_skip = sd2 / (sigma_ve**2 + sd2)
        c_out = sigma_ve * self.sigma_data * torch.rsqrt(sigma_ve**2 + sd2)
        c_in = torch.rsqrt(sigma_ve**2 + sd2)
        c_noise = 0.25 * torch.log(sigma_ve.reshape(-1))
        x_ve = x.to(torch.float32) / alpha
        f = self.inner((c_in * x_ve).to(x.dtype), c_noise, y)
        return (c_skip * x_ve + c_out * f.to(torch.float32)).to(x.dtype)
