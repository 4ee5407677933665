"""Plugin discovery through real entry points written to a throwaway site directory."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import infercore
from infercore import plugins
from infercore.registry import backends, get_registry


def _write_dist(site, dist, module, source, hook_name="infercore"):
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{hook_name}]\n{dist} = {module}\n")
    (site / f"{module}.py").write_text(textwrap.dedent(source))


GOOD = """
    import torch
    import infercore
    from infercore.registry import Backend

    class Doubling(Backend):
        family = "norm.rms"
        name = "doubling"
        priority = 1000

        def run(self, x, weight, eps):
            return x * 2

    @infercore.hookimpl
    def infercore_register(registry):
        registry.register(Doubling)
"""

BROKEN_IMPORT = """
    raise ImportError("the vendor library is missing")
"""

RAISES_IN_HOOK = """
    import infercore
    from infercore.registry import Backend, Family

    class Half(Backend):
        family = "test.half"
        name = "half"

    @infercore.hookimpl
    def infercore_register(registry):
        registry.add_family(Family("test.half"))
        registry.register(Half)
        raise RuntimeError("bad state")
"""

TYPO = """
    import infercore

    @infercore.hookimpl
    def infercore_regsiter(registry):
        pass
"""


@pytest.fixture
def site(tmp_path, monkeypatch, fresh_plugins):
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _status(name):
    return {s.name: s for s in plugins.statuses()}[name]


def test_entry_point_plugin_adds_backend(site):
    _write_dist(site, "goodplug", "goodplug_mod", GOOD)
    names = [b.name for b in backends("norm.rms")]
    assert names[0] == "doubling"
    assert get_registry().get("norm.rms", "doubling").plugin == "goodplug"
    x = torch.randn(3, 4)
    assert torch.equal(infercore.ops.rms_norm(x, torch.ones(4)), x * 2)
    assert _status("goodplug").status == "loaded"


def test_broken_plugins_are_reported_and_the_rest_works(site):
    _write_dist(site, "brokenplug", "brokenplug_mod", BROKEN_IMPORT)
    _write_dist(site, "raisingplug", "raisingplug_mod", RAISES_IN_HOOK)
    _write_dist(site, "typoplug", "typoplug_mod", TYPO)
    _write_dist(site, "goodplug", "goodplug_mod", GOOD)
    with pytest.warns(UserWarning) as record:
        fams = get_registry().families()
    messages = " ".join(str(w.message) for w in record)
    for name in ("brokenplug", "raisingplug", "typoplug"):
        assert f"'{name}'" in messages
        assert _status(name).status == "failed"
    assert "the vendor library is missing" in _status("brokenplug").error
    assert "bad state" in _status("raisingplug").error
    assert "infercore_regsiter" in _status("typoplug").error
    # The failed plugin's registrations were rolled back; the others are intact.
    assert "test.half" not in fams
    assert [b.name for b in backends("norm.rms")] == ["doubling", "triton", "reference"]


def test_disabled_plugins_are_blocked(site, monkeypatch):
    _write_dist(site, "goodplug", "goodplug_mod", GOOD)
    monkeypatch.setenv("INFERCORE_DISABLED_PLUGINS", "otherplug, goodplug")
    assert "doubling" not in [b.name for b in backends("norm.rms")]
    status = _status("goodplug")
    assert status.status == "blocked" and "INFERCORE_DISABLED_PLUGINS" in status.error


def test_autoload_switch_skips_entry_points_but_keeps_builtins(site, monkeypatch):
    _write_dist(site, "goodplug", "goodplug_mod", GOOD)
    monkeypatch.setenv("INFERCORE_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert [b.name for b in backends("norm.rms")] == ["triton", "reference"]
    assert _status("goodplug").status == "blocked"
    assert _status("infercore.ops.norm.plugin").status == "loaded"


def test_builtin_plugin_can_be_disabled(site, monkeypatch):
    monkeypatch.setenv("INFERCORE_DISABLED_PLUGINS", "infercore.ops.norm.plugin")
    assert "norm.rms" not in get_registry().families()


def test_plugin_registered_late_still_receives_register_hook(fresh_plugins):
    get_registry().families()  # plugins loaded

    class Late:
        @infercore.hookimpl
        def infercore_register(self, registry):
            from infercore.registry import Family

            registry.add_family(Family("test.late"))

    assert plugins.register_plugin(Late(), "late")
    assert "test.late" in get_registry().families()


def test_import_never_fails_because_of_a_plugin(tmp_path):
    _write_dist(tmp_path, "brokenplug", "brokenplug_mod", BROKEN_IMPORT)
    code = (
        "import warnings, infercore; warnings.simplefilter('ignore');"
        "print(sorted(infercore.registry.families()))"
    )
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True)
    assert "norm.rms" in out.stdout
