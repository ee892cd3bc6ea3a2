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


def _check_variant(tmp_path, old: str, new: str, *, raw: bytes | None = None):
    text = S.manifest_text("zz-input")
    assert old in text
    path = tmp_path / "zz-input.yaml"
    if raw is None:
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
    else:
        path.write_bytes(text.replace(old, "@RAW@", 1).encode("utf-8").replace(b"@RAW@", raw))
    return mf.check_file(path, root=tmp_path)


def test_a_date_like_scalar_is_text_even_an_impossible_date(tmp_path):
    """YAML 1.1 makes 2024-05-01 a date and 2025-13-45 an uncaught ValueError; no manifest field is a date."""
    for venue in ("2024-05-01", "2025-13-45", "2001-12-14t21:59:43.10-05:00"):
        m, problems = _check_variant(tmp_path, "venue: TestConf 2020", f"venue: {venue}")
        assert problems == [] and m.paper.venue == venue


def test_an_unusable_integer_is_an_error_at_its_line(tmp_path):
    for value in ("1" * 5000, "0x" + "f" * 5000, "1:59:" + "59:" * 3000 + "1"):
        _, [p] = _check_variant(tmp_path, "year: 2020", f"year: {value}")
        assert (p.line, p.field) == (7, "") and "integer too large" in p.message, p
        assert len(str(p)) < 200  # the value is not echoed back


def test_nesting_too_deep_for_python_is_one_problem_at_its_line(tmp_path):
    """About 500 levels used to exhaust the recursion limit (copy.deepcopy of a profile), 990 in the
    duplicate-key walk: a traceback instead of a message."""
    deep = "[" * 500 + "1" + "]" * 500
    _, [p] = _check_variant(tmp_path, "  n: 8\n", f"  n: {deep}\n")
    assert p.line == 15 and p.field == "data.n..." and "nested more than 50 levels" in p.message, p
    block = "".join("  " * (i + 1) + "a:\n" for i in range(60))
    _, [p] = _check_variant(tmp_path, "method: zz-test-method\n", f"method: zz-test-method\nextra:\n{block}")
    assert p.line == 13 + mf.MAX_DEPTH and p.field == "extra.a..."


def test_bytes_that_are_not_utf8_or_control_characters_name_their_line(tmp_path):
    _, [p] = _check_variant(tmp_path, "TestConf 2020", "", raw=b"ICLR \xe9")
    assert p.line == 8 and "not UTF-8" in p.message and "0xe9" in p.message, p
    _, [p] = _check_variant(tmp_path, "TestConf 2020", "", raw=b"ICLR \x07")
    assert p.line == 8 and p.message == "invalid YAML: control character '\\x07' is not allowed", p


def test_keys_are_read_as_written(tmp_path):
    """An unquoted yes / null / 1 key is text (YAML 1.1 would make it True / None / 1, reported as data[1])."""
    for key in ("yes", "null", "1", "off"):
        _, [p] = _check_variant(tmp_path, "  noise: 0.1\n", f"  noise: 0.1\n  {key}: 1\n")
        assert (p.line, p.field) == (17, f"data.{key}") and "unknown parameter" in p.message, p
    _, problems = _check_variant(tmp_path, "  noise: 0.1\n", "  noise: 0.1\n  yes: 1\n  'yes': 2\n")
    assert (18, "data.yes", "duplicate key 'yes'") in [(p.line, p.field, p.message) for p in problems], problems
