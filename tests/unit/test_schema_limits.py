"""Numbers a manifest cannot hold: non-finite floats (a tolerance of .inf passes every claim) and seeds outside
0 <= seed < 2**32 (numpy's seed range; larger ones crashed torch.manual_seed mid-run). The CLI's --seeds has the
same range. The located messages are in tests/bad_manifests/ (non-finite-*, seed-too-large*)."""
from __future__ import annotations

import os

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from registry import cli
from registry.methods import Strict
from registry.schema import SEED_LIMIT, SEEDS, Claim, Reported, SeedSelection, Tolerance, Train

import zz_support as S

INF, NAN = float("inf"), float("nan")


@pytest.mark.parametrize("bad", [INF, -INF, NAN])
def test_claim_numbers_must_be_finite(bad):
    for model, data in ((Tolerance, {"abs": bad, "rationale": "r"}), (Tolerance, {"rel": bad, "rationale": "r"}),
                        (Reported, {"value": bad}), (Reported, {"spread": bad}),
                        (SeedSelection, {"metric": "m", "compare": ">=", "value": bad, "rationale": "r"}),
                        (Train, {"seeds": [0], "lr": bad})):
        with pytest.raises(ValidationError, match="finite number"):
            model.model_validate(data)
    c = {"id": "c", "statement": "s", "source": "t", "kind": "scaled", "rationale": "r", "target": bad}
    with pytest.raises(ValidationError, match="finite number"):
        Claim.model_validate(c)


@pytest.mark.parametrize("field", ["abs", "rel"])
def test_a_tolerance_cannot_be_negative(field):
    """A negative width would make a claim stricter than its threshold while reading as a tolerance."""
    assert Tolerance.model_validate({field: 0.0, "rationale": "r"}).width(2.0) == 0.0
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        Tolerance.model_validate({field: -0.1, "rationale": "r"})


def test_method_config_floats_must_be_finite():
    class Data(Strict):
        noise: float = 0.0

    assert Data(noise=1e300).noise == 1e300
    for bad in (INF, NAN):
        with pytest.raises(ValidationError, match="finite number"):
            Data(noise=bad)
    with pytest.raises(ValidationError, match="finite number"):
        S.Config.model_validate({"data": {"noise": NAN}, "model": {}, "train": {}})


def test_seed_range():
    assert SEED_LIMIT == 2**32
    assert SEEDS.validate_python([0, 2**32 - 1]) == [0, 2**32 - 1]
    for bad in ([2**32], [2**64], [-1], [0, 0], [], [1.0], ["1"]):
        with pytest.raises(ValidationError):
            SEEDS.validate_python(bad)


@pytest.mark.parametrize("arg", ["18446744073709551616", "4294967296", "-1", "0,0", "a,b", ","])
def test_parse_seeds_refuses_bad_values(arg, capsys):
    with pytest.raises(SystemExit) as exc:
        cli._parse_seeds(arg)
    assert exc.value.code == 2
    assert "error: --seeds must be" in capsys.readouterr().err


def test_parse_seeds_accepts_the_full_range():
    assert cli._parse_seeds("0, 4294967295") == [0, 4294967295]
    assert cli._parse_seeds(None) is None and cli._parse_seeds("") is None


def test_train_with_out_of_range_seed_exits_2_without_traceback(tmp_path, monkeypatch):
    root = tmp_path / "reg"
    S.write_manifest(root / "manifests", "zz-seeds")
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    monkeypatch.setenv("REGISTRY_ROOT", str(root))
    r = CliRunner().invoke(cli.cli, ["train", "zz-seeds", "--profile", "smoke", "--seeds", str(2**64), "--no-track"])
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.output
    assert "--seeds must be distinct integers from 0 to 2**32 - 1" in r.output
    assert not (root / "results").exists()
