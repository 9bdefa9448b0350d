"""bench/tree.py: the module tree with line counts."""

from __future__ import annotations

import subprocess

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


def test_in_a_checkout_it_counts_what_git_knows_and_inside_an_ignored_extract_every_file(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("var/\n*.log\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("1\n2\n")  # untracked, not ignored: counted
    (tmp_path / "pkg" / "debug.log").write_text("x\n" * 100)  # ignored: not counted
    extract = tmp_path / "var" / "bench-baseline-abc"
    (extract / "pkg").mkdir(parents=True)
    (extract / "pkg" / "old.py").write_text("1\n2\n3\n")

    assert "| `pkg/` | 1 | 2 |" in tree.render(tmp_path, ["pkg"])
    assert "| `pkg/` | 1 | 3 |" in tree.render(extract, ["pkg"])
