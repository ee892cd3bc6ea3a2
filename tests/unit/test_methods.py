"""Method registry: lookup hints, double registration, config type checks."""
from __future__ import annotations

import pytest
from pydantic import BaseModel

from registry import methods
from registry.methods import MethodConfig, Strict, UnknownMethodError, register

import zz_support as S


def test_unknown_key_did_you_mean():
    with pytest.raises(UnknownMethodError) as exc:
        methods.get("zz-test-methd")
    msg = str(exc.value)
    assert "unknown method 'zz-test-methd'" in msg and "Did you mean 'zz-test-method'?" in msg
    assert exc.value.key == "zz-test-methd" and S.TEST_METHOD in exc.value.known
    assert isinstance(exc.value, KeyError) and not msg.startswith('"')


def test_unknown_key_without_close_match_has_no_hint():
    with pytest.raises(UnknownMethodError) as exc:
        methods.get("qqqqqqqqqqqqqqqqqqqqqqqq")
    assert "Did you mean" not in str(exc.value) and "Available:" in str(exc.value)


def test_get_returns_registered_method():
    m = methods.get(S.TEST_METHOD)
    assert m.config is S.Config and m.run is S.run and m.module == "zz_support"
    assert m.source_dir == S.HERE / "zz_support.py"


def test_double_registration_from_another_module_raises():
    def run(cfg, ctx):
        return {}

    run.__module__ = "somewhere.else"
    with pytest.raises(ValueError, match="registered twice"):
        register(S.TEST_METHOD, config=S.Config)(run)
    assert methods.get(S.TEST_METHOD).run is S.run  # the original survives


def test_reregistration_from_same_module_is_allowed():
    # re-importing/reloading a method module must not fail
    assert register(S.TEST_METHOD, config=S.Config)(S.run) is S.run
    assert methods.get(S.TEST_METHOD).run is S.run


class NotAMethodConfig(Strict):
    data: Strict = Strict()


class PlainModel(BaseModel):
    pass


@pytest.mark.parametrize("config", [dict, PlainModel, NotAMethodConfig, S.Config(), None, "Config"])
def test_register_refuses_non_method_config(config):
    with pytest.raises(TypeError, match="MethodConfig"):
        register("zz-test-bad-config", config=config)
    assert "zz-test-bad-config" not in methods._REGISTRY


def test_method_config_sections_are_strict():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        S.Config.model_validate({"data": {}, "model": {}, "train": {}, "extra": {}})
    with pytest.raises(ValidationError):
        S.Config.model_validate({"data": {"nope": 1}, "model": {}, "train": {}})
    assert isinstance(S.Config.model_validate({"data": {}, "model": {}, "train": {}}), MethodConfig)
