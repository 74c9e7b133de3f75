"""`imprint.refs`: the one reader of `name@version`, strict where Python's own digit handling is not."""

import pytest

from imprint.refs import MAX_VERSION, BadModuleRef, ModuleRef, parse

BAD = ["m@²", "m@①", "m@١", "m@-1", "m@+1", "m@0", f"m@{MAX_VERSION + 1}", "m@" + "9" * 5000, "", "@@", "m@", "@1",
       "m@1@2", "m@1.0", "m@ 1", "../m@1", ".m", "m n"]  # fmt: skip


@pytest.mark.parametrize(
    "text, name, version",
    [
        ("handbook", "handbook", None),
        ("handbook@2", "handbook", 2),
        ("a.b_c-d@007", "a.b_c-d", 7),
        (f"m@{MAX_VERSION}", "m", MAX_VERSION),
    ],  # fmt: skip
)
def test_good_references_round_trip(text, name, version):
    ref = parse(text)
    assert ref == ModuleRef(name, version) and parse(str(ref)) == ref
    assert str(ref) == (name if version is None else f"{name}@{version}")


@pytest.mark.parametrize("text", BAD)
def test_every_bad_form_is_one_value_error(text):
    with pytest.raises(BadModuleRef) as caught:
        parse(text)
    assert isinstance(caught.value, ValueError) and "\n" not in str(caught.value) and len(str(caught.value)) < 200


def test_unicode_digits_that_python_reads_as_numbers_are_refused():
    assert int("١") == 1 and "²".isdigit()  # what the old `isdigit()` then `int()` let through
    for digit in ("١", "²", "①", "٣", "߁"):
        with pytest.raises(BadModuleRef, match="bad module version"):
            parse(f"m@{digit}")


def test_refs_imports_nothing_else_of_imprint():
    import ast
    from pathlib import Path

    import imprint.refs

    tree = ast.parse(Path(imprint.refs.__file__).read_text())
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert imported and not [m for m in imported if m.startswith("imprint")]
