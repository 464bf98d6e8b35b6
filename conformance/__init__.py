"""diffspec.conformance: check anyone's sampler, scheduler, schedule or loss against the executable spec.

    from diffspec.conformance import check_sampler, check_scheduler, check_schedule, check_loss

    report = check_sampler(my_sampler, "dpmpp_2m")                      # diffspec's calling convention
    report = check_sampler(sample_dpmpp_2m, "dpmpp_2m", convention="k-diffusion")
    report = check_scheduler(diffusers.DPMSolverMultistepScheduler())
    print(report); report.passed; report.rows; report.to_json()

The registry's contract (`diffspec.reference.samplers.SAMPLER_INFO`: options and their allowed values, draws,
requirements, order, aliases) is turned into checks against exact answers (Gaussian probability-flow maps, the
Gaussian-mixture oracle) and against the reference sampler of the same name. The project's own test suite is this
kit applied to its backends (the reference, the trainer in float64 and float32, the runtime). Command line:
`diffspec-check` (`python -m diffspec.conformance`).
"""

from diffspec.conformance.losses import check_loss
from diffspec.conformance.report import Report, Row
from diffspec.conformance.samplers import CHECKS, check_sampler, sampler_info
from diffspec.conformance.schedulers import check_scheduler
from diffspec.conformance.schedules import check_schedule

__all__ = [
    "CHECKS",
    "Report",
    "Row",
    "check_loss",
    "check_sampler",
    "check_schedule",
    "check_scheduler",
    "sampler_info",
]
