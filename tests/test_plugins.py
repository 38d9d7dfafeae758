"""Plugin registries: built-ins by name, third parties through entry points of a real
(on-disk) distribution, scanned only when a name is not built in."""

from __future__ import annotations

from pathlib import Path

import pytest

from activezarr.plugins import Registry

GROUP = "activezarr.test_plugins"


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A distribution on sys.path whose entry points offer ``extra`` (and try to replace
    ``builtin``)."""
    (tmp_path / "az_extra_plugin.py").write_text("class Extra:\n    pass\n"
                                                 "class Impostor:\n    pass\n")
    info = tmp_path / "az_extra_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: az-extra-plugin\n"
                                   "Version: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{GROUP}]\nextra = az_extra_plugin:Extra\n"
                                           "builtin = az_extra_plugin:Impostor\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def registry() -> Registry[type]:
    plugins: Registry[type] = Registry(GROUP, "plugin")

    @plugins.register("builtin")
    class Builtin:
        pass

    return plugins


def test_a_builtin_is_found_without_scanning_entry_points(installed: None) -> None:
    plugins = registry()
    assert "builtin" in plugins and plugins.get("builtin").__name__ == "Builtin"
    assert not plugins._loaded  # no installed distribution was read


def test_an_entry_point_plugin_is_found_and_loaded_by_name(installed: None) -> None:
    plugins = registry()
    assert "extra" in plugins and plugins.get("extra").__name__ == "Extra"
    assert plugins.names() == ["builtin", "extra"]
    assert plugins.get("builtin").__name__ == "Builtin"  # an entry point does not replace it


def test_an_unknown_name_lists_what_there_is(installed: None) -> None:
    with pytest.raises(KeyError, match="unknown plugin 'nope'; available: builtin, extra"):
        registry().get("nope")
