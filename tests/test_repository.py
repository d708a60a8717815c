"""The repository stands on its own and its documents agree with it.

No file points outside the repository (the facts the code relies on live in docs/), no
Python file carries a date (measurements and their dates live in benchmarks/README.md),
the README stays short and starts with the two commands for a fresh machine, every
relative link in the README and docs/ leads to a file (and heading) that exists, and
each config states the same expected result as the README. Reads files only: no JAX.
"""

import ast
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Built by concatenation so that this file does not match its own search.
OUTSIDE_PATHS = (".." + "/shared", "/work" + "/shared")
DATE = re.compile(r"\b20\d\d-[01]\d-[0-3]\d\b")
FIRST_COMMANDS = [
    "pip install -e . && mamkpd train --config=configs/sample_openfield.py "
    "--workdir=/tmp/sample_openfield",
    'pip install -e ".[dev]" && pip install --no-deps jax2onnx && pytest',
]
MAX_README_LINES = 250
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
SKIPPED_DIRS = {".git", "__pycache__", ".pytest_cache", ".ipynb_checkpoints", "build", "dist",
                "workdirs", ".whl"}


def _walk():
  """Every file below ROOT outside build, cache and virtual-environment folders."""
  for folder, dirs, files in os.walk(ROOT):
    dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS and not d.startswith(".venv")
               and not d.endswith(".egg-info")]
    for name in files:
      yield os.path.relpath(os.path.join(folder, name), ROOT)


def repository_files():
  """Tracked files plus untracked ones git does not ignore (so new files count too)."""
  try:
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, check=True, timeout=60).stdout
  except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
    return sorted(_walk())                        # not a git checkout (an unpacked sdist)
  paths = [p for p in out.decode("utf-8").split("\0") if p]
  return sorted(p for p in paths if os.path.isfile(os.path.join(ROOT, p)))


def read(path):
  with open(os.path.join(ROOT, path), encoding="utf-8") as f:
    return f.read()


def markdown_documents():
  docs = [os.path.join("docs", name) for name in sorted(os.listdir(os.path.join(ROOT, "docs")))
          if name.endswith(".md")]
  return ["README.md", "benchmarks/README.md", "kernels/README.md", *docs]


def heading_anchors(text):
  """GitHub's anchors of a markdown file's headings (outside code blocks)."""
  anchors, in_code = set(), False
  for line in text.splitlines():
    if line.startswith("```"):
      in_code = not in_code
    elif not in_code and line.startswith("#"):
      title = line.lstrip("#").strip().lower()
      anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
  return anchors


def relative_links(text):
  """(target, anchor) of every link that is neither a URL nor an anchor on the page."""
  text = re.sub(r"```.*?```", "", text, flags=re.S)           # links in code are not links
  for match in LINK.finditer(text):
    target = match.group(1)
    if re.match(r"[a-z]+:", target) or target.startswith("#"):
      continue
    path, _, anchor = target.partition("#")
    yield path, anchor


def expected_result(docstring):
  """The text of a config docstring's one 'Expected result:' paragraph, unwrapped."""
  paragraphs = [" ".join(p.split()) for p in docstring.split("\n\n")]
  found = [p for p in paragraphs if p.startswith("Expected result:")]
  assert len(found) == 1, f"{len(found)} 'Expected result:' paragraphs"
  return found[0][len("Expected result:"):].strip()


def test_no_file_points_outside_the_repository():
  offenders = []
  for path in repository_files():
    with open(os.path.join(ROOT, path), "rb") as f:
      data = f.read()
    offenders += [f"{path}: {p}" for p in OUTSIDE_PATHS if p.encode() in data]
  assert not offenders, "files that point outside the repository:\n" + "\n".join(offenders)


def test_no_python_file_carries_a_date():
  offenders = [f"{path}:{number}: {line.strip()}"
               for path in repository_files() if path.endswith(".py")
               for number, line in enumerate(read(path).splitlines(), 1) if DATE.search(line)]
  assert not offenders, ("dates belong in benchmarks/README.md:\n" + "\n".join(offenders))


def test_readme_is_short_and_starts_with_the_two_commands():
  text = read("README.md")
  assert len(text.splitlines()) <= MAX_README_LINES, (
      f"README.md has {len(text.splitlines())} lines, more than {MAX_README_LINES}")
  first_block = re.search(r"```\w*\n(.*?)```", text, re.S)
  assert first_block, "README.md has no code block"
  assert first_block.group(1).strip().splitlines() == FIRST_COMMANDS


@pytest.mark.parametrize("document", markdown_documents())
def test_relative_links_lead_to_existing_files(document):
  folder = os.path.dirname(os.path.join(ROOT, document))
  broken = []
  for path, anchor in relative_links(read(document)):
    target = os.path.normpath(os.path.join(folder, path))
    if not os.path.exists(target):
      broken.append(f"{path} (no such file)")
    elif anchor and target.endswith(".md"):
      with open(target, encoding="utf-8") as f:
        if anchor not in heading_anchors(f.read()):
          broken.append(f"{path}#{anchor} (no such heading)")
  assert not broken, f"{document}: broken links:\n" + "\n".join(broken)


def test_link_checker_catches_broken_links():
  # The checks above must be able to fail: a missing file and a missing heading.
  text = "[a](docs/none.md) [b](docs/scan.md#no-such-heading) [c](https://x.org) ```[d](e)```"
  links = list(relative_links(text))
  assert links == [("docs/none.md", ""), ("docs/scan.md", "no-such-heading")]
  assert "no-such-heading" not in heading_anchors(read("docs/scan.md"))
  assert "box--crop" in heading_anchors("## Box → crop\n")


@pytest.mark.parametrize("config", sorted(n for n in os.listdir(os.path.join(ROOT, "configs"))
                                          if n.endswith(".py")))
def test_each_config_states_the_readme_expected_result(config):
  docstring = ast.get_docstring(ast.parse(read(os.path.join("configs", config))))
  expected = expected_result(docstring)
  readme_row = [line for line in read("README.md").splitlines()
                if line.startswith(f"| `{config}` |")]
  assert len(readme_row) == 1, f"README.md's configs table has no single row for {config}"
  assert readme_row[0].rstrip(" |").endswith(expected), (
      f"configs/{config} expects {expected!r}; README.md says {readme_row[0]!r}")


def test_hrvmamba_manifests_ship_with_the_tests():
  for variant in ("tiny", "small", "base"):
    path = os.path.join("tests", "data", "hrvmamba", f"state_dict_{variant}.tsv")
    lines = read(path).splitlines()
    assert lines[0].split("\t") == ["name", "shape", "dtype"], path
    assert len(lines) - 1 == {"tiny": 1812, "small": 1812, "base": 1900}[variant], path
