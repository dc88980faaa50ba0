"""The documentation names only what exists: every relative link (and its #anchor), every
`python tools/X.py` / `python train.py` flag, every script and its method and dataset
arguments, every configs/*.yaml path and every config key the README, DATASETS.md and
docs/ pages give. Nothing runs here (tests/test_readme_quickstart.py runs the quickstart);
this reads files, imports the trainers once, and takes a few seconds."""
import glob
import itertools
import os.path as osp
import re
import shlex

import pytest

from tests.conftest import ROOT

PAGES = sorted(["README.md", "DATASETS.md"]
               + [osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, "docs", "**", "*.md"),
                                                          recursive=True)])

# Pages other branches add (the lead merges them): a link may name them before they land
# here. Empty this set once they are on main.
PENDING = set()  # pages another branch adds (none now)
PENDING_FLAGS = set()  # (tool, flag) pairs another branch adds

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
SPAN = re.compile(r"`([^`\n]+)`")
PLACEHOLDER = re.compile(r"[<>$\[\]{}]|\.\.\.|^[A-Z][A-Z_]*$")


def read(page):
    with open(osp.join(ROOT, page)) as f:
        return f.read()


def exists(path):
    return osp.exists(osp.join(ROOT, path)) or path in PENDING


def prose(text):
    """The page without its fenced code blocks."""
    return FENCE.sub("", text)


def slug(heading):
    """GitHub's anchor for a heading."""
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return s.replace(" ", "-")


def anchors(page):
    found = {slug(h) for h in re.findall(r"^#+ (.+)$", prose(read(page)), re.M)}
    return found | set(re.findall(r'<a id="([^"]+)"', read(page)))


def example_paths(text):
    """Files a page writes as an example (the first line of a block is '# file: PATH' or
    '# PATH ...'): they do not exist in the checkout by design."""
    out = set()
    for _, body in FENCE.findall(text):
        m = re.match(r"#\s*(?:file:\s*)?(\S+\.(?:py|yaml))", body)
        if m:
            out.add(m.group(1))
    return out


def example_methods(text):
    """Methods a page declares in its example code (`name = "x"` or `name, trainer, ... =
    "x", ...` in a Method subclass): its commands may run them."""
    return set(re.findall(r'^\s*name\b[^=\n]*=\s*"(\w+)"', "\n".join(
        body for _, body in FENCE.findall(text)), re.M))


def commands(text):
    """Shell commands of a page: the lines of its bash blocks (continuations joined,
    comments dropped, split at && ; |) and the inline spans that start like one."""
    lines = []
    for lang, body in FENCE.findall(text):
        if lang in ("bash", "sh", ""):
            lines += [ln for ln in body.replace("\\\n", " ").splitlines()
                      if not ln.lstrip().startswith("#")]
    lines += [s for s in SPAN.findall(prose(text))
              if re.match(r"(\w+=\S+ )*(python|bash|torchrun) ", s)]
    out = []
    for line in lines:
        line = re.sub(r"\s#.*$", "", line)
        for part in re.split(r"&&|;|\|(?!\|)", line):
            try:
                argv = shlex.split(part)
            except ValueError:
                continue
            while argv and re.match(r"^\w+=", argv[0]):
                argv = argv[1:]  # VAR=value prefixes
            if argv:
                out.append(argv)
    return out


def tool_flags(tool):
    """Every '--flag' string in a tool's source and in the tools/ modules it names (for
    tools/bench.py also the benchmarks/ modules, which it finds by name at run time)."""
    src = read(tool)
    if tool == "tools/bench.py":
        src += "".join(read(osp.relpath(p, ROOT))
                       for p in glob.glob(osp.join(ROOT, "benchmarks", "*.py")))
    for other in glob.glob(osp.join(ROOT, "tools", "*.py")):
        name = osp.splitext(osp.basename(other))[0]
        if name != osp.splitext(osp.basename(tool))[0] and re.search(rf"\b{name}\b", src):
            src += read(osp.relpath(other, ROOT))
    return set(re.findall(r"""["'](--[\w-]+)["']""", src))


@pytest.fixture(scope="module")
def config_keys():
    import train

    cfg = train.setup_cfg(train.get_parser().parse_args([]))
    keys = set()

    def walk(node, prefix):
        for k, v in node.items():
            keys.add(prefix + k)
            if hasattr(v, "items"):
                walk(v, prefix + k + ".")
    walk(cfg, "")
    return keys


@pytest.fixture(scope="module")
def method_names():
    from toolbox.methods import load_methods

    names = set(load_methods())
    # a trainer file not yet carrying its declaration (the registry is being rolled out):
    # its method is named after the file; once every trainer declares itself, only the
    # registry counts
    for path in glob.glob(osp.join(ROOT, "trainers", "*.py")):
        src = read(osp.relpath(path, ROOT))
        if "TRAINER_REGISTRY.register" in src and "@register_method" not in src:
            names.add(osp.splitext(osp.basename(path))[0])
    return names


def test_readme_is_short_and_keeps_what_ci_runs():
    readme = read("README.md")
    assert len(readme.splitlines()) <= 250
    ci = read(".ci/run")
    for line in ("pip install -r requirements.txt", "python -m pytest -q -n 2 tests"):
        assert line in ci and line in readme, line
    for heading in ("Quickstart", "Methods", "Citation", "Licence"):
        assert re.search(rf"^## {heading}\b", readme, re.M), heading


def test_licence_section_matches_the_checkout():
    """No licence is claimed that the repository does not hold."""
    section = read("README.md").split("## Licence", 1)[1]
    has_licence = any(osp.exists(osp.join(ROOT, n)) for n in ("LICENSE", "LICENSE.md", "LICENCE"))
    assert ("not been chosen" in section) != has_licence


@pytest.mark.parametrize("page", PAGES)
def test_links_resolve(page):
    bad = []
    for target in LINK.findall(prose(read(page))):
        if re.match(r"\w+://|mailto:", target):
            continue
        path, _, anchor = target.partition("#")
        path = osp.normpath(osp.join(osp.dirname(page), path)) if path else page
        if not exists(path):
            bad.append(target)
        elif anchor and osp.exists(osp.join(ROOT, path)) and anchor not in anchors(path):
            bad.append(target)
    assert not bad, f"{page}: broken links {bad}"


@pytest.mark.parametrize("page", PAGES)
def test_commands_name_existing_tools_flags_scripts_and_arguments(page, method_names):
    text = read(page)
    bad = []
    for argv in commands(text):
        if argv[0] in ("python", "python3", "torchrun") and len(argv) > 1:
            # the last .py is the program whose flags follow it (a launcher such as
            # torchrun or tools/torchrun.py takes its own flags before it)
            script = next((a for a in reversed(argv[1:]) if a.endswith(".py")), None)
            if script is None or PLACEHOLDER.search(script) or script in example_paths(text):
                continue
            missing = [a for a in argv[1:] if a.endswith(".py") and not exists(a)]
            if missing:
                bad += [f"no file {a}" for a in missing]
                continue
            if not osp.exists(osp.join(ROOT, script)):
                continue  # pending on main
            flags = tool_flags(script)
            for a in argv[argv.index(script) + 1:]:
                flag = a.split("=")[0]
                if flag.startswith("--") and flag not in flags and flag != "--help" \
                        and (script, flag) not in PENDING_FLAGS:
                    bad.append(f"{script} has no {flag}")
        elif argv[0] == "bash" and len(argv) > 1:
            script, args = argv[1], argv[2:]
            if PLACEHOLDER.search(script):
                continue
            if not exists(script):
                bad.append(f"no script {script}")
            name = osp.basename(script)
            if script in ("scripts/main.sh", "scripts/protocol.sh") and args:
                if not PLACEHOLDER.search(args[0]) and args[0] not in method_names \
                        and args[0] not in example_methods(text):
                    bad.append(f"{script}: no method {args[0]}")
                args = args[1:]
            if name == "protocol.sh":
                continue  # STEP, then its own arguments
            dataset = args[0] if args and name in ("main.sh", "compare_all.sh") else None
            if dataset and not PLACEHOLDER.search(dataset) and not osp.exists(osp.join(ROOT, "configs", "datasets", dataset + ".yaml")):
                bad.append(f"{' '.join(argv)}: no dataset config {dataset}.yaml")
    assert not bad, f"{page}: {bad}"


@pytest.mark.parametrize("page", PAGES)
def test_config_files_exist(page):
    text = read(page)
    bad = []
    for path in set(re.findall(r"configs/[\w/{},.-]+?\.yaml", text)) - example_paths(text):
        for p in expand_braces(path):
            if not exists(p):
                bad.append(p)
    assert not bad, f"{page}: {bad}"


def expand_braces(s):
    m = re.search(r"\{([^{}]*)\}", s)
    if not m:
        return [s]
    return list(itertools.chain.from_iterable(
        expand_braces(s[:m.start()] + alt.strip() + s[m.end():]) for alt in m.group(1).split(",")))


@pytest.mark.parametrize("page", PAGES)
def test_config_keys_exist(page, config_keys):
    """Every `KEY` or `KEY VALUE` span with a dotted upper-case key (TRAINER.COOP.N_CTX,
    TRAINER.COOP.{N_CTX, CSC}, MODEL.HEAD.*) names keys of the default config with every
    trainer's group (a key the text calls upstream's is not checked)."""
    text = read(page)
    bad = []
    for found in SPAN.finditer(text):
        span = found.group(1)
        if "upstream" in text[max(0, found.start() - 60):found.start()]:
            continue  # a key named as upstream's, not ours
        m = re.match(r"([A-Z][A-Z0-9_]*(?:\.(?:[A-Z0-9_*]+|\{[A-Z0-9_, ]+\}))+)\.?(?:\s|$)", span)
        if not m or "<" in span:
            continue
        for key in expand_braces(m.group(1)):
            if key.endswith("*"):
                ok = any(k.startswith(key[:-1]) for k in config_keys)
            else:
                ok = key in config_keys
            if not ok:
                bad.append(key)
    assert not bad, f"{page}: unknown config keys {sorted(set(bad))}"


def test_running_many_grid_yaml_plans_the_runs_it_describes(tmp_path):
    """docs/running_many.md's grid.yaml, as a dry run: every method x variant x shots x
    seed once, with its opts, in the scripts' folders; --tag puts them in <variant>_TAG."""
    import subprocess
    import sys

    text = read("docs/running_many.md")
    body = next(b for lang, b in FENCE.findall(text) if b.startswith("# grid.yaml"))
    (tmp_path / "grid.yaml").write_text(body)

    def planned(*extra):
        proc = subprocess.run([sys.executable, osp.join(ROOT, "tools", "grid.py"), "--config",
                               str(tmp_path / "grid.yaml"), "--dry-run", "--data",
                               str(tmp_path / "data"), "--output-root", str(tmp_path / "out"),
                               *extra], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        runs = [shlex.split(ln[len("[run] "):]) for ln in proc.stdout.splitlines()
                if ln.startswith("[run] ")]
        return [osp.relpath(a[a.index("--output-dir") + 1], tmp_path / "out") for a in runs], runs

    folders, runs = planned()
    # methods: softcpt NATA, CATA; coop default, 16-True-end; kgcoop w8 = 5; 2 shots, 3 seeds
    assert len(folders) == len(set(folders)) == 5 * 2 * 3
    assert all(a[-2:] == ["OPTIM.MAX_EPOCH", "5"] for a in runs)
    assert {f.split("/")[1] for f in folders} == {"SoftCPT", "CoOp", "KgCoOp"}
    assert {f.split("/")[2].split("_")[0] for f in folders} == {"tiny"}  # tiny_vit: the yaml's
    tagged, _ = planned("--tag", "ep5")
    assert sorted(tagged) == sorted(
        "/".join(f.split("/")[:3] + [f.split("/")[3] + "_ep5", f.split("/")[4]]) for f in folders)


def test_code_points_at_sections_and_pages_that_exist():
    """Messages and comments that send the user to "README, 'Section'" or to a docs/ page
    name a README heading or a page that exists."""
    readme_headings = re.findall(r"^#+ (.+)$", prose(read("README.md")), re.M)
    bad = []
    files = glob.glob(osp.join(ROOT, "*.py")) + [
        p for d in ("toolbox", "trainers", "tools", "datasets", "scripts")
        for p in glob.glob(osp.join(ROOT, d, "**", "*.*"), recursive=True)
        if p.endswith((".py", ".sh"))]
    for path in files:
        with open(path) as f:
            src = f.read()
        for section in re.findall(r"README, '([^']+)'", src):
            if not any(h.startswith(section) for h in readme_headings):
                bad.append(f"{osp.relpath(path, ROOT)}: README has no section '{section}'")
        for page in re.findall(r"\bdocs/[\w/]+\.md\b", src):
            if not exists(page):
                bad.append(f"{osp.relpath(path, ROOT)}: no page {page}")
    assert not bad, bad


def test_every_registered_method_is_in_the_readme_and_methods_tables():
    from toolbox.methods import load_methods

    for page in ("README.md", "docs/methods.md"):
        rows = [ln for ln in read(page).splitlines() if ln.startswith("| ")]
        listed = set(re.findall(r"`(\w+)`", "\n".join(rows)))
        missing = set(load_methods()) - listed
        assert not missing, f"{page}: no table row for {sorted(missing)}"
