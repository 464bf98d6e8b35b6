"""Every scheduler class of the installed diffusers that has a `step`: from_diffusers reproduces it (and the
diffusers-loop test runs it on its default config at least), or refuses it with the documented reason."""

import inspect

import pytest
from diffspec.reference import interop
from test_interop import CASES, diffusers


def _stepping_classes():
    import diffusers.schedulers as schedulers

    names = []
    for name in dir(schedulers):
        cls = getattr(schedulers, name, None)
        if name.endswith("Scheduler") and not name.startswith("Flax") and inspect.isclass(cls):
            # DummyObject placeholders stand for classes whose backend is not installed: they have no `step`
            if callable(getattr(cls, "step", None)) and type(cls).__name__ != "DummyObject":
                names.append(name)
    return sorted(names)


STEPPING = _stepping_classes()


def test_every_class_is_either_reproduced_or_refused():
    assert len(STEPPING) > 40, STEPPING  # the listing works
    covered = set(interop.SUPPORTED_CLASSES) | set(interop.REFUSED)
    assert [n for n in STEPPING if n not in covered] == []
    assert not set(interop.SUPPORTED_CLASSES) & set(interop.REFUSED)


def test_every_reproduced_class_runs_against_diffusers_on_its_default_config():
    defaults = {cls for cls, overrides, _, options in CASES if not overrides and not options}
    assert sorted(set(interop.SUPPORTED_CLASSES) - defaults) == []


@pytest.mark.parametrize("name", sorted(interop.REFUSED))
def test_refused_classes_say_why(name):
    assert hasattr(diffusers, name) or name in STEPPING or name == "ScoreSdeVeScheduler"
    with pytest.raises(ValueError, match="no counterpart|not implemented") as err:
        interop.from_diffusers({"_class_name": name}, 4)
    assert interop.REFUSED[name] in str(err.value)
