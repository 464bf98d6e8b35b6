"""The contract itself: every registry record is consistent with its function, the trainer's registry is built
from it and matches it, and aliases resolve."""

import inspect

import pytest
from diffspec.reference.samplers import SAMPLER_ALIASES, SAMPLER_INFO, SAMPLERS, Option, get_sampler
from diffspec.trainer import samplers as trainer_samplers

NAMES = sorted(SAMPLER_INFO)


def _keyword_options(fn):
    return {
        p.name: p.default
        for p in inspect.signature(fn).parameters.values()
        if p.kind is p.KEYWORD_ONLY and p.name != "noise"
    }


@pytest.mark.parametrize("name", NAMES)
def test_record_matches_its_function(name):
    info = SAMPLER_INFO[name]
    assert info.name == name and SAMPLERS[name] is info.fn
    assert {k: o.default for k, o in info.options.items()} == _keyword_options(info.fn), (
        "the contract's options (names and defaults) must be the function's keyword options"
    )
    for key, option in info.options.items():
        assert isinstance(option, Option)
        assert option.allows(option.default), (key, option)
        assert not any(option.allows(v) for v in option.invalid if not option.callable), (key, option.invalid)
        assert all(option.allows(v) for v in option.probe), (key, option.probe)
    counts = info.draws(info.with_defaults())
    assert counts is None or (len(counts) == 2 and min(counts) >= 0)
    assert (info.draw_count(5) != 0) == info.stochastic or info.draw_count(5) is None
    for opts, order in info.order_cases():
        assert order > 0 and set(opts) <= set(info.options), (opts, order)


def test_trainer_registry_is_built_from_the_contract():
    assert trainer_samplers.MISSING == ()
    assert sorted(trainer_samplers.SAMPLERS) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_trainer_twin_takes_the_contract_options(name):
    assert _keyword_options(trainer_samplers.SAMPLERS[name]) == {
        k: o.default for k, o in SAMPLER_INFO[name].options.items()
    }


def test_aliases_resolve_in_both_registries():
    for alias, name in SAMPLER_ALIASES.items():
        assert alias not in SAMPLER_INFO
        assert get_sampler(alias) is SAMPLERS[name]
        assert trainer_samplers.get_sampler(alias) is trainer_samplers.SAMPLERS[name]
    with pytest.raises(ValueError, match="unknown sampler 'nope'.*ddim"):
        trainer_samplers.get_sampler("nope")
