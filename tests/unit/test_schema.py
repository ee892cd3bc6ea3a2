"""JSON schema generation, profile resolution (deep merge, seeds, device) and content_hash stability."""
from __future__ import annotations

import json

import pytest

from registry import manifest as mf
from registry.schema import Manifest, json_schema

import zz_support as S


def test_json_schema_has_claim_fields():
    schema = json_schema()
    json.dumps(schema)  # serialisable
    assert schema["$schema"].endswith("2020-12/schema") and schema["title"] == "Paper reproduction manifest"
    assert {"id", "status", "paper"} <= set(schema["required"])
    assert schema["additionalProperties"] is False
    claim = schema["$defs"]["Claim"]
    for f in ("id", "statement", "source", "kind", "reported", "rationale", "metric", "baseline", "compare",
              "target", "tolerance", "statistic", "profiles"):
        assert f in claim["properties"], f
    assert {"id", "statement", "source", "kind"} <= set(claim["required"])
    assert claim["additionalProperties"] is False
    text = json.dumps(claim)
    for op in (">=", "<=", "within"):
        assert json.dumps(op) in text
    assert set(schema["$defs"]["Tolerance"]["required"]) == {"rationale"}


def test_cli_schema_matches_json_schema(tmp_path):
    from click.testing import CliRunner

    from registry.cli import cli

    out = tmp_path / "s.json"
    res = CliRunner().invoke(cli, ["schema", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text()) == json_schema()


@pytest.fixture
def m(tmp_path) -> Manifest:
    text = S.manifest_text("zz-resolve").replace(
        "  width: 4\n", "  width: 4\n  opt:\n    a: 1\n    b: 2\n    nested: {x: 1, y: 2}\n").replace(
        "      width: 16\n", "      width: 16\n      opt:\n        b: 3\n        nested: {y: 5}\n    device: cuda\n")
    path = tmp_path / "zz-resolve.yaml"
    path.write_text(text)
    m, problems = mf.check_file(path, with_methods=False)
    assert problems == []
    return m


def test_resolve_deep_merges_profile_over_base(m):
    r = mf.resolve(m, "paper")
    # 'description' is documentation, not a method parameter
    assert r.model == {"width": 16, "opt": {"a": 1, "b": 3, "nested": {"x": 1, "y": 5}}}
    assert r.seeds == [0, 1, 2] and r.device == "cuda"
    assert r.train == {"lr": 0.1, "steps": 10}
    assert r.data == {"n": 8, "noise": 0.1}


def test_resolve_seeds_override_and_device_inheritance(m):
    r = mf.resolve(m, "smoke")
    assert r.seeds == [0] and r.train == {"lr": 0.1, "steps": 2}
    assert "seeds" not in r.train
    assert r.device == "cpu"  # hardware.device, the profile does not set one
    assert r.model["opt"] == {"a": 1, "b": 2, "nested": {"x": 1, "y": 2}}
    assert r.as_dict()["seeds"] == [0] and r.as_dict()["profile"] == "smoke"
    assert set(r.method_sections()) == {"data", "model", "train"}


def test_resolve_does_not_mutate_manifest(m):
    r = mf.resolve(m, "paper")
    r.model["opt"]["nested"]["x"] = 99
    r.seeds.append(7)
    again = mf.resolve(m, "cpu")
    assert again.model["opt"]["nested"]["x"] == 1 and again.seeds == [0, 1, 2]
    assert m.model.params()["opt"]["nested"] == {"x": 1, "y": 2}


def test_resolve_unknown_profile(m):
    with pytest.raises(KeyError, match="no profile 'gpu'"):
        mf.resolve(m, "gpu")


def test_deep_merge_replaces_non_dicts_and_copies():
    base = {"a": {"b": [1, 2]}, "c": 1}
    out = mf.deep_merge(base, {"a": {"b": [3]}, "c": {"d": 1}})
    assert out == {"a": {"b": [3]}, "c": {"d": 1}}
    assert base == {"a": {"b": [1, 2]}, "c": 1}


def test_content_hash_pinned():
    obj = {"c": True, "b": [1, 2, "z"], "a": {"y": None, "x": 1.5}}
    # sha256 of '{"a":{"x":1.5,"y":null},"b":[1,2,"z"],"c":true}' (computed with sha256sum)
    assert mf.content_hash(obj) == "e7e9cfaf3f71094ec898b909df239703771d97f782574aafc9306bc57de38bdc"
    assert mf.content_hash({"a": {"x": 1.5, "y": None}, "b": [1, 2, "z"], "c": True}) == mf.content_hash(obj)
    assert mf.content_hash({**obj, "c": False}) != mf.content_hash(obj)
    assert mf.content_hash({**obj, "b": [2, 1, "z"]}) != mf.content_hash(obj)  # list order matters
