"""YAML reading details: merge keys are not duplicate keys; syntax errors name where a construct started."""
from __future__ import annotations

from registry import manifest as mf

import zz_support as S

# the base manifest's profiles, written with an anchor and merge keys (an explicit key overrides a merged one)
MERGED_PROFILES = """\
profiles:
  smoke: &quick
    description: Seconds.
    train:
      seeds: [0]
      steps: 2
  cpu: {<<: *quick, description: CPU run.}
  paper:
    <<: [*quick]
    description: Paper run.
    train: {seeds: [0, 1], steps: 3}
    model:
      width: 16
metrics:
"""


def _with_merge_keys(paper_id: str) -> str:
    text = S.manifest_text(paper_id)
    start, end = text.index("profiles:\n"), text.index("metrics:\n")
    return text[:start] + MERGED_PROFILES + text[end + len("metrics:\n"):]


def test_merge_keys_are_not_duplicate_keys(tmp_path):
    path = tmp_path / "zz-merge.yaml"
    path.write_text(_with_merge_keys("zz-merge"), encoding="utf-8")
    m, problems = mf.check_file(path, root=tmp_path)
    assert problems == [], problems
    assert m.profiles["cpu"].description == "CPU run." and m.profiles["cpu"].train == {"seeds": [0], "steps": 2}
    assert m.profiles["paper"].description == "Paper run." and m.profiles["paper"].train["seeds"] == [0, 1]
    assert mf.resolve(m, "cpu").seeds == [0]


def test_overriding_key_is_located_at_its_own_line(tmp_path):
    path = tmp_path / "zz-merge.yaml"
    text = _with_merge_keys("zz-merge").replace("  cpu: {<<: *quick, description: CPU run.}",
                                                "  cpu: {<<: *quick, description: CPU run., train: {steps: 0.5}}")
    path.write_text(text, encoding="utf-8")
    m, problems = mf.check_file(path, root=tmp_path)
    line = text.splitlines().index("  cpu: {<<: *quick, description: CPU run., train: {steps: 0.5}}") + 1
    assert [(p.line, p.field) for p in problems] == [(line, "profiles.cpu.train.steps")], problems


def test_real_duplicate_key_next_to_a_merge_key_is_still_found(tmp_path):
    path = tmp_path / "zz-merge.yaml"
    text = _with_merge_keys("zz-merge").replace("  cpu: {<<: *quick, description: CPU run.}",
                                                "  cpu: {<<: *quick, description: CPU run., description: again}")
    path.write_text(text, encoding="utf-8")
    _, problems = mf.check_file(path, root=tmp_path)
    assert [(p.field, p.message) for p in problems] == [("profiles.cpu.description", "duplicate key 'description'")]


def test_unclosed_flow_sequence_points_at_its_opening_line(tmp_path):
    """The parser notices an unclosed `[` on the next line; the problem is reported where it was opened,
    and the message names both lines."""
    text = S.manifest_text("zz-unclosed").replace("  n: 8\n", "  n: [8\n")
    line = text.splitlines().index("  n: [8") + 1
    path = tmp_path / "zz-unclosed.yaml"
    path.write_text(text, encoding="utf-8")
    _, [p] = mf.check_file(path, root=tmp_path)
    assert p.line == line and p.field == ""
    assert p.message.startswith(f"invalid YAML: while parsing a flow sequence started at line {line}: ")
    assert p.message.endswith(f"at line {line + 1}")


def test_unclosed_quote_points_at_its_opening_line(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("a: 1\nb: 'abc\nc: 2\nd: 3\n", encoding="utf-8")
    _, [p] = mf.check_file(path, root=tmp_path)
    assert p.line == 2 and p.message == ("invalid YAML: while scanning a quoted scalar started at line 2: "
                                         "found unexpected end of stream at line 5")


def test_error_without_context_keeps_the_problem_line(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("a: 1\nb: c: 2\n", encoding="utf-8")
    _, [p] = mf.check_file(path, root=tmp_path)
    assert p.line == 2 and p.message == "invalid YAML: mapping values are not allowed in this context"


def test_a_list_as_mapping_key_is_invalid_yaml_not_a_crash(tmp_path):
    path = tmp_path / "zz-key.yaml"
    path.write_text("id: zz-key\n? [a, b]\n: 1\n", encoding="utf-8")
    m, problems = mf.check_file(path, root=tmp_path)
    assert m is None and any("invalid YAML" in p.message and "unhashable" in p.message for p in problems), problems
