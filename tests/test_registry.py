"""Registry semantics: priority, reasons, explicit choices, overrides, components."""

import logging
from dataclasses import dataclass

import pytest
import torch

import infercore
from infercore import plugins
from infercore.config import Config, ConfigError
from infercore.registry import (
    Backend,
    Family,
    NoBackendError,
    component_backend,
    create,
    get_registry,
    record_resolutions,
    resolve,
    use_backend,
)


@dataclass(frozen=True)
class Toy:
    x: torch.Tensor
    limit: int = 100

    @property
    def device(self):
        return self.x.device

    @property
    def dtype(self):
        return self.x.dtype


class Small(Backend):
    family = "test.toy"
    name = "small"
    priority = 50

    def not_supported_reasons(self, inputs):
        reasons = super().not_supported_reasons(inputs)
        if inputs.x.numel() > inputs.limit:
            reasons.append(f"only {inputs.limit} elements, got {inputs.x.numel()}")
        return reasons

    def run(self, x):
        return ("small", x)


class HalfOnly(Backend):
    family = "test.toy"
    name = "half"
    priority = 100
    dtypes = (torch.float16,)

    def run(self, x):
        return ("half", x)


class Fallback(Backend):
    family = "test.toy"
    name = "fallback"
    priority = 0
    devices = ("cpu",)

    def run(self, x):
        return ("fallback", x)


class Missing(Backend):
    family = "test.toy"
    name = "missing"
    priority = 200
    requires = ("no_such_module_for_infercore_tests",)


class ToyConfig(Config):
    size: int = 4
    name: str = "pool"


class ToyPlugin:
    @infercore.hookimpl
    def infercore_register(self, registry):
        registry.add_family(Family("test.toy", "op", "toy family"))
        for cls in (Fallback, Small, HalfOnly, Missing):
            registry.register(cls)
        registry.add_family(Family("test.pool", "component"))
        registry.register(component_backend(
            "test.pool", "list", lambda cfg: [cfg.name] * cfg.size, config_class=ToyConfig))


@pytest.fixture
def toy(fresh_plugins):
    assert plugins.register_plugin(ToyPlugin(), "toy")
    return get_registry()


def test_backends_listed_in_priority_order(toy):
    assert [b.name for b in toy.backends("test.toy")] == ["missing", "half", "small", "fallback"]
    assert all(b.plugin == "toy" for b in toy.backends("test.toy"))


def test_auto_picks_first_supported(toy):
    assert resolve("test.toy", Toy(torch.zeros(3, dtype=torch.float16))).name == "half"
    assert resolve("test.toy", Toy(torch.ones(3))).name == "small"
    assert resolve("test.toy", Toy(torch.ones(300))).name == "fallback"


def test_environment_reasons_name_the_missing_package(toy):
    missing = toy.get("test.toy", "missing")
    assert not missing.supports(Toy(torch.ones(1)))
    assert "no_such_module_for_infercore_tests" in missing.environment_reasons()[0]


def test_no_backend_error_lists_every_backend_and_reason(toy):
    x = torch.ones(300, dtype=torch.float64, device="meta")
    with pytest.raises(NoBackendError) as info:
        resolve("test.toy", Toy(x))
    err = info.value
    assert set(err.reasons) == {"missing", "half", "small", "fallback"}
    text = str(err)
    assert "dtype float64 not supported (supports float16)" in text
    assert "only 100 elements, got 300" in text
    assert "device 'meta' not supported" in text
    assert "x=float64[300]@meta" in text


def test_explicit_backend_that_does_not_fit_raises_value_error(toy):
    with pytest.raises(ValueError, match=r"backend='half'.*dtype float32 not supported"):
        resolve("test.toy", Toy(torch.ones(3)), "half")
    with pytest.raises(ValueError, match=r"'nope' is not a backend of 'test.toy'.*'small'"):
        resolve("test.toy", Toy(torch.ones(3)), "nope")
    assert resolve("test.toy", Toy(torch.ones(3)), "fallback").name == "fallback"


def test_unknown_family_names_the_known_ones(toy):
    with pytest.raises(ValueError, match=r"unknown family 'test.nope'.*test.toy"):
        toy.backends("test.nope")


def test_use_backend_forces_and_nests(toy):
    inputs = Toy(torch.ones(3))
    with use_backend("test.toy", "fallback"):
        assert resolve("test.toy", inputs).name == "fallback"
        with use_backend({"test.toy": "small"}):
            assert resolve("test.toy", inputs).name == "small"
        assert resolve("test.toy", inputs).name == "fallback"
        assert resolve("test.toy", inputs, "small").name == "small"  # the argument wins
    assert resolve("test.toy", inputs).name == "small"
    with pytest.raises(ValueError, match="not a backend"), use_backend("test.toy", "typo"):
        pass


def test_record_resolutions_collects_what_dispatch_chose(toy):
    small, big = Toy(torch.ones(3)), Toy(torch.ones(300))
    resolve("test.toy", small)  # outside any block: not recorded
    with record_resolutions() as outer:
        resolve("test.toy", small)
        with record_resolutions() as inner, use_backend("test.toy", "fallback"):
            resolve("test.toy", small)
        resolve("test.toy", big)
    resolve("test.toy", big)
    assert [b.name for b in outer] == ["small", "fallback", "fallback"]
    assert [b.name for b in inner] == ["fallback"]


def test_reference_backends_that_read_device_values_are_not_graph_safe():
    registry = get_registry()
    unsafe = {f"{b.family}:{b.name}" for fam in ("attention.paged", "attention.decode",
                                                 "attention.varlen", "kv.write")
              for b in registry.backends(fam) if not b.graph_safe}
    assert unsafe == {"attention.paged:reference", "attention.decode:reference",
                      "attention.varlen:reference", "kv.write:reference"}
    assert get_registry().get("norm.rms", "reference").graph_safe


def test_forced_backend_that_does_not_fit_says_who_forced_it(toy, monkeypatch):
    with use_backend("test.toy", "half"), pytest.raises(ValueError, match="use_backend"):
        resolve("test.toy", Toy(torch.ones(3)))
    monkeypatch.setenv("INFERCORE_BACKEND_TEST_TOY", "half")
    with pytest.raises(ValueError, match="INFERCORE_BACKEND_TEST_TOY=half"):
        resolve("test.toy", Toy(torch.ones(3)))


def test_environment_variable_forces_backend(toy, monkeypatch):
    monkeypatch.setenv("INFERCORE_BACKEND_TEST_TOY", "fallback")
    assert resolve("test.toy", Toy(torch.ones(3))).name == "fallback"
    with use_backend("test.toy", "small"):  # the block wins over the environment
        assert resolve("test.toy", Toy(torch.ones(3))).name == "small"


def test_environment_variable_forces_rms_norm_backend(fresh_plugins, monkeypatch):
    x, w = torch.randn(2, 8), torch.randn(8)
    monkeypatch.setenv("INFERCORE_BACKEND_NORM_RMS", "reference")
    calls = []
    ref = get_registry().get("norm.rms", "reference")
    monkeypatch.setattr(type(ref), "run", lambda self, *a: calls.append(1) or a[0])
    infercore.ops.rms_norm(x, w)
    assert calls == [1]


class PreferFallback:
    @infercore.hookimpl
    def infercore_select_backend(self, family, inputs):
        if family == "test.toy":
            return "fallback" if inputs.x.numel() < 10 else "half"
        return None


def test_select_hook_overrides_priority(toy, caplog):
    assert plugins.register_plugin(PreferFallback(), "policy")
    assert resolve("test.toy", Toy(torch.ones(3))).name == "fallback"
    # The policy picks a backend that cannot run: warn and use the default order.
    with caplog.at_level(logging.WARNING, logger="infercore"):
        assert resolve("test.toy", Toy(torch.ones(30))).name == "small"
    assert "cannot run the inputs" in caplog.text
    # Explicit choices still win over the policy.
    assert resolve("test.toy", Toy(torch.ones(3)), "small").name == "small"


def test_resolved_backend_is_callable(toy):
    impl = resolve("test.toy", Toy(torch.ones(3)))
    assert impl(7) == ("small", 7)


def test_create_builds_component_from_config_or_dict(toy):
    assert create("test.pool", "list", {"size": 2, "name": "a"}) == ["a", "a"]
    assert create("test.pool", "list", ToyConfig(size=1)) == ["pool"]
    assert create("test.pool") == ["pool"] * 4
    with pytest.raises(ConfigError, match="size"):
        create("test.pool", "list", {"size": "many"})
    with pytest.raises(ConfigError, match="colour"):
        create("test.pool", "list", {"colour": "red"})
    with pytest.raises(TypeError, match="must be a ToyConfig or a dict"):
        create("test.pool", "list", 3)
    with pytest.raises(ValueError, match="op family"):
        create("test.toy", "small")


def test_duplicate_backend_name_is_rejected(toy):
    with pytest.raises(ValueError, match="already registered by plugin 'toy'"):
        toy.register(Small)


def test_debug_log_names_passed_over_backends(toy, caplog):
    with caplog.at_level(logging.DEBUG, logger="infercore.registry"):
        resolve("test.toy", Toy(torch.ones(300)))
    assert "using 'fallback'" in caplog.text and "small" in caplog.text
