"""The layers hold: import-linter's contracts (pyproject.toml) and no private name used
across modules."""

import ast
import os
import shutil
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("sslj", "experiments")


def _python_files():
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if name.endswith(".py"):
                    yield os.path.join(folder, name)


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    return rel.removesuffix(".__init__")


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_name_uses(path: str) -> list[str]:
    """`from <project module> import _name` and `<project module alias>._name`, where the
    module is another one of the project's (a module's own names are its business)."""
    tree = ast.parse(open(path).read(), path)
    own = _module_name(path)
    aliases = {}  # local name -> project module it stands for
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] not in PACKAGES or node.module == own:
                continue
            for a in node.names:
                if _private(a.name):
                    found.append(f"line {node.lineno}: from {node.module} import {a.name}")
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in PACKAGES and a.name != own:
                    aliases[a.asname or a.name.split(".")[0]] = a.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases and _private(node.attr)):
            found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_private_name_crosses_a_module():
    offences = {os.path.relpath(p, ROOT): private_name_uses(p) for p in _python_files()}
    assert not {k: v for k, v in offences.items() if v}


def test_private_name_check_finds_an_offence(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from sslj.config import _hidden\nfrom sslj import config as c\n"
                   "x = c._other\ny = c.public\n")
    assert private_name_uses(str(bad)) == ["line 1: from sslj.config import _hidden",
                                           "line 3: c._other"]


def test_import_contracts_are_kept():
    assert shutil.which("lint-imports"), "import-linter missing: pip install -e '.[test]'"
    proc = subprocess.run(["lint-imports", "--no-cache"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 kept, 0 broken" in proc.stdout


def test_every_cited_document_is_in_the_repository():
    """Docstrings, configs and README cite `docs/*.md`; each must exist here (issue 19:
    the protocol facts were cited by a file name that lived outside the repository)."""
    import re

    cited, bare = set(), []
    paths = [os.path.join(ROOT, "README.md"), os.path.join(ROOT, "experiments", "benchmarks",
                                                           "README.md")]
    for top in ("sslj", "experiments", "tests"):
        for d, _, files in os.walk(os.path.join(ROOT, top)):
            paths += [os.path.join(d, f) for f in files if f.endswith((".py", ".md"))]
    for path in paths:
        text = open(path, encoding="utf-8").read()
        cited |= set(re.findall(r"docs/[A-Z_]+\.md", text))
        bare += [f"{os.path.relpath(path, ROOT)}: {m}" for m in
                 re.findall(r"(?<![\w/])(?:REFERENCE|SAFE_SSL_BASELINES|DESIGN)\.md", text)]
    assert cited and all(os.path.isfile(os.path.join(ROOT, c)) for c in cited), cited
    assert not bare  # cite the file where it lies: docs/<NAME>.md
