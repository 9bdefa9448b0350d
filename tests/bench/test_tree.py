"""bench/tree.py: the module tree with line counts."""

from __future__ import annotations

from bench import tree


def test_it_counts_lines_per_file_directory_and_package(tmp_path):
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("one\ntwo\nthree\n")
    (tmp_path / "pkg" / "sub" / "b.py").write_text("x\ny")  # no final newline: still two lines
    (tmp_path / "pkg" / "sub" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "sub" / "__pycache__" / "b.cpython-312.pyc").write_bytes(b"\0\n\n\n")
    (tmp_path / "js").mkdir()
    (tmp_path / "js" / "live.js").write_text("a\n" * 10)

    text = tree.render(tmp_path, ["pkg", "js"])

    assert "| `pkg/` | 3 | 5 |" in text
    assert "| `js/` | 1 | 10 |" in text
    assert "| **total** | **4** | **15** |" in text
    lines = [line.split() for line in text.split("```text\n")[1].split("```")[0].splitlines()]
    assert lines == [
        ["pkg/", "5"],
        ["__init__.py", "0"],
        ["a.py", "3"],
        ["sub/", "2"],
        ["b.py", "2"],
        ["js/", "10"],
        ["live.js", "10"],
    ]
