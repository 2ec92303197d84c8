"""The filter language: containerd's grammar, its error messages, and OR/AND semantics."""

from __future__ import annotations

from typing import Any

import pytest

from pycontainerd import errdefs, filters
from pycontainerd.filters import adaptor_from_mapping, parse, parse_all

# The corpus of containerd's filters/filter_test.go, as plain dicts.
CORPUS: list[dict[str, Any]] = [
    {"name": "foo", "labels": {"foo": "true"}},
    {"name": "bar"},
    {"name": "foo", "labels": {"foo": "present", "more complex label": "present"}},
    {"name": "bar", "labels": {"bar": "true"}},
    {"name": "fooer", "labels": {'more complex label with \\ and "': "present"}},
    {"name": "fooer", "labels": {'more complex label with \\ and ".post': "present"}},
    {"name": "baz", "other": "too complex, yo"},
    {"name": "bazo", "other": "abc"},
    {"name": "compound", "labels": {"foo": "omg_asdf.asdf-qwer"}},
]


def matching(expr: str) -> list[int]:
    f = parse(expr)
    return [i for i, obj in enumerate(CORPUS) if f.match(adaptor_from_mapping(obj))]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("", list(range(9))),
        ("name", list(range(9))),
        ("labels.foo", [0, 2, 8]),
        ("labels.foo,name", [0, 2, 8]),
        ("labels.foo==true", [0]),
        ("labels.foo==omg_asdf.asdf-qwer", [8]),
        ("name==bar", [1, 3]),
        ("name!=bar", [0, 2, 4, 5, 6, 7, 8]),
        ("name==bar,labels.bar", [3]),
        ('other=="too complex, yo"', [6]),
        ("other~=[abc]+,name!=foo", [6, 7]),
        ("other~=/[abc]+/,name!=foo", [6, 7]),
        ("other~=/[abc]{1,2}/,name!=foo", [6, 7]),
        ('other~=/[abc]{0,1}"\\//,name!=foo', []),
        ("name==bar,labels.bar==true", [3]),
        ("name==bar,labels.bar==wrong", []),
        ('name==foo,labels."more complex label"', [2]),
        ('labels."more complex label with \\\\ and \\""==present', [4]),
        ('labels."more complex label with \\\\ and \\"".post==present', [5]),
        ("name~=|ba.|", [1, 3, 6, 7]),
        ("name == bar , labels.bar", [3]),
    ],
)
def test_containerd_corpus(expr: str, expected: list[int]) -> None:
    assert matching(expr) == expected


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        (
            "labels.|foo|==omg_asdf.asdf-qwer",
            "filters: parse error: [labels. >|||< foo|==omg_asdf.asdf-qwer]: invalid quote encountered",
        ),
        (
            'labels.?"more complex label with \\\\ and \\"".post==present',
            'filters: parse error: [labels. >|?|< "more complex label with \\\\ and \\"".post==present]: '
            "expected field or quoted",
        ),
        ("name==foo,", "filters: parse error: [name==foo,]: expected field or quoted"),
        ("labels.", "filters: parse error: [labels.]: expected field or quoted"),
        ("image~=,id?=?fbaq", "filters: parse error: [image~= >|,|< id?=?fbaq]: expected value or quoted"),
    ],
)
def test_containerd_error_messages(expr: str, message: str) -> None:
    with pytest.raises(errdefs.InvalidArgument) as exc:
        parse(expr)
    assert str(exc.value) == message


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        ("name=foo", "unsupported operator '='"),
        ("name==", "expected value or quoted"),
        ("a==b c", "unexpected input: c"),
        ("labels.containerd.io/key==value", "quoted literal not terminated"),
        ("labels.a b", "expected an operator"),
        ('labels."\\g"', "illegal escape sequence"),
        ('labels."\\xaz"', "illegal numeric escape sequence"),
        ('labels."abc', "quoted literal not terminated"),
        ("name~=/[a-/", "invalid regular expression"),
        ("foo\x00bar", "unexpected null"),
        ("   ", "expected field or quoted"),
    ],
)
def test_errors_point_at_the_problem(expr: str, fragment: str) -> None:
    with pytest.raises(errdefs.InvalidArgument, match="filters: parse error") as exc:
        parse(expr)
    assert fragment in str(exc.value)


def test_error_marks_position() -> None:
    with pytest.raises(errdefs.InvalidArgument) as exc:
        parse("name==a,id=b")
    assert ">|=|<" in str(exc.value)
    assert str(exc.value).startswith("filters: parse error: [name==a,id >|=|< b]")


def test_quoted_values_and_escapes() -> None:
    f = parse(r'name=="a\tb\u00e9\x41\101"')
    assert isinstance(f, filters.All)
    sel = f.filters[0]
    assert isinstance(sel, filters.Selector)
    assert sel.value == "a\tbéAA"
    assert sel.fieldpath == ("name",)
    assert sel.operator is filters.Operator.EQUAL


def test_regexp_quoting_with_slash_and_pipe() -> None:
    obj = adaptor_from_mapping({"name": "docker.io/library/busybox:latest"})
    with pytest.raises(errdefs.InvalidArgument, match="illegal escape sequence"):
        parse(r"name~=/^docker\.io\//")  # \. is not an escape of the filter language...
    assert parse(r"name~=/^docker\\.io\//").match(obj)  # ...it must be doubled inside quotes
    assert parse(r"name~=|^docker\\.io/library|").match(obj)
    assert parse(r"name~=^docker\.io/").match(obj)  # unquoted: backslashes kept as written
    assert parse("name==docker.io/library/busybox:latest").match(obj)


def test_regexp_is_unanchored_search() -> None:
    obj = adaptor_from_mapping({"name": "registry.k8s.io/pause:3.6"})
    assert parse("name~=pause").match(obj)
    assert not parse("name~=^pause").match(obj)


def test_absent_fields() -> None:
    obj = adaptor_from_mapping({"name": "x", "labels": {}})
    assert not parse("labels.a").match(obj)
    assert not parse('labels.a==""').match(obj)  # == requires presence
    assert parse("labels.a!=b").match(obj)  # != treats absent as ""
    assert not parse("labels").match(obj)  # empty labels map: not present
    assert parse("labels.a~=/.*/").match(obj)  # regexp against "" (containerd semantics)


def test_dotted_label_keys_quoted_or_not() -> None:
    obj = adaptor_from_mapping({"labels": {"com.example.a": "b", "com": "c"}})
    assert parse('labels."com.example.a"==b').match(obj)
    assert parse("labels.com.example.a==b").match(obj)
    assert parse("labels.com==c").match(obj)
    assert not parse("labels.com.example==b").match(obj)


def test_empty_label_value_is_present() -> None:
    obj = adaptor_from_mapping({"labels": {"k": ""}})
    assert parse("labels.k").match(obj)
    assert parse('labels.k==""').match(obj)


def test_nested_mappings_and_scalars() -> None:
    obj = adaptor_from_mapping(
        {"runtime": {"name": "io.containerd.runc.v2", "options": {"x": 1}}, "ok": True}
    )
    assert parse("runtime.name==io.containerd.runc.v2").match(obj)
    assert parse("runtime.options.x==1").match(obj)
    assert parse("ok==true").match(obj)
    assert not parse("runtime.name.more").match(obj)


def test_parse_all_is_or_of_ands() -> None:
    f = parse_all(["name==bar,labels.bar", "name==bazo"])
    got = [i for i, obj in enumerate(CORPUS) if f.match(adaptor_from_mapping(obj))]
    assert got == [3, 7]


def test_parse_all_empty_matches_everything() -> None:
    assert parse_all([]) is filters.ALWAYS
    assert parse_all([""]) is filters.ALWAYS
    assert parse_all(["", ""]).match(adaptor_from_mapping({}))
    assert parse_all(["name==x", ""]) is filters.ALWAYS  # containerd: Any(…, Always)


def test_parse_all_reports_the_bad_filter() -> None:
    with pytest.raises(errdefs.InvalidArgument, match=r"\[name==a,\]"):
        parse_all(["name==b", "name==a,"])


def test_parse_all_rejects_a_bare_string() -> None:
    with pytest.raises(TypeError):
        parse_all("name==a")


def test_custom_adaptor_callable() -> None:
    seen: list[tuple[str, ...]] = []

    def adaptor(path: tuple[str, ...]) -> str | None:
        seen.append(path)
        return "v" if path == ("labels", "a.b") else None

    assert parse('labels."a.b"==v').match(adaptor)
    assert seen == [("labels", "a.b")]


def test_error_on_a_long_filter_quotes_only_the_neighbourhood() -> None:
    # the message travels in gRPC trailing metadata (16 KiB at most): the whole filter did not fit
    with pytest.raises(errdefs.InvalidArgument) as exc:
        parse("name==" + "a" * 100_000 + " b" + "c" * 100_000)
    msg = str(exc.value)
    assert msg.startswith("filters: parse error: [...aaa")
    assert ">|b|< ccc" in msg and msg.endswith("...]: unexpected input: b")
    assert len(msg) < 400
    with pytest.raises(errdefs.InvalidArgument) as exc:
        parse("labels." + "a" * 100_000 + ".")
    assert len(str(exc.value)) < 400
