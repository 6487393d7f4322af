"""The house rules of ARCHITECTURE.md, checked on the source so that they stay true.

Each edge of the package is one module: ``flock.py`` is the only caller of ``fcntl.flock``,
``linux.py`` the only user of ``ctypes``, ``git.py`` the only place that builds a git command
line, ``state.py`` the only writer of files in the state directory, ``events.py`` the only
reader of the event log. Module-level imports form no cycle, and every module ARCHITECTURE.md
names exists. The checks read the syntax tree, not the text, so a comment or a docstring that
mentions a forbidden call does not count.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "versatil_fs"


def _modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = ast.parse(path.read_text(), str(path))
    return found


MODULES = _modules()


def _calls(tree: ast.AST) -> Iterator[ast.Call]:
    return (node for node in ast.walk(tree) if isinstance(node, ast.Call))


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _where(module: str, node: ast.AST) -> str:
    return f"{module}:{getattr(node, 'lineno', '?')}"


def test_only_flock_py_calls_flock() -> None:
    offenders = []
    for module, tree in MODULES.items():
        if module == "versatil_fs.flock":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _dotted(node) in ("fcntl.flock", "fcntl.lockf"):
                offenders.append(_where(module, node))
            if isinstance(node, ast.ImportFrom) and node.module == "fcntl" and any(
                alias.name in ("flock", "lockf") for alias in node.names
            ):
                offenders.append(_where(module, node))
    assert not offenders, f"fcntl.flock outside versatil_fs/flock.py: {offenders}"


def test_only_linux_py_uses_ctypes() -> None:
    offenders = []
    for module, tree in MODULES.items():
        if module == "versatil_fs.linux":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "ctypes"
                                                    for a in node.names):
                offenders.append(_where(module, node))
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "ctypes":
                offenders.append(_where(module, node))
    assert not offenders, f"ctypes outside versatil_fs/linux.py: {offenders}"


def test_only_git_py_builds_a_git_command_line() -> None:
    """A list or tuple that starts with the string "git" is a git argv: only git.py makes one."""
    offenders = []
    for module, tree in MODULES.items():
        if module == "versatil_fs.git":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.List | ast.Tuple) and node.elts:
                first = node.elts[0]
                if isinstance(first, ast.Constant) and first.value == "git":
                    offenders.append(_where(module, node))
    assert not offenders, f"a git command line outside versatil_fs/git.py: {offenders}"


# Names through which code reaches the state directory's layout (StateDir's attributes).
_STATE_LAYOUT = re.compile(
    r"\b(state|self\.state|self\._state)\.(root|logs|lock_table|table_lock|leases|config_file|"
    r"subdir|event_log)\b"
)
_WRITERS = {"open", "os.open", "os.replace", "os.rename", "os.link", "os.symlink",
            "os.truncate", "os.mkfifo"}
_WRITING_METHODS = {"write_bytes", "write_text", "touch", "mkdir", "rename", "replace",
                    "symlink_to", "hardlink_to"}


def test_only_state_py_writes_state_files() -> None:
    """Every file write whose target is spelled from the state directory's layout is state.py's.

    A heuristic by necessity (paths flow through variables), so it holds the obvious spelling
    to the rule: ``open(state.lock_table, ...)``, ``(state.root / "x").write_bytes(...)``.
    """
    offenders = [f"{module}:{found}" for module, tree in MODULES.items()
                 if module != "versatil_fs.state" for found in _state_writes(tree)]
    assert not offenders, f"a state file written outside versatil_fs/state.py: {offenders}"


def test_the_state_write_guard_sees_the_obvious_spellings() -> None:
    """The guard above must be able to fail."""
    tree = ast.parse(
        "open(self.state.lock_table, 'w')\n"
        "(state.root / 'x').write_bytes(b'')\n"
        "os.open(state.leases / 'a', os.O_WRONLY | os.O_CREAT)\n"
        "os.replace(tmp, state.logs / 'y')\n"  # the target is the second argument
        "open(state.lock_table)\n"  # a read
        "open(repo / 'x', 'w')\n"  # not the state directory
    )
    assert len(_state_writes(tree)) == 4


def _state_writes(tree: ast.AST) -> list[str]:
    found = []
    for call in _calls(tree):
        name = _dotted(call.func)
        targets: list[ast.AST] = []
        if name in _WRITERS and call.args:
            targets = list(call.args[:2]) if name in ("os.replace", "os.rename") \
                else [call.args[0]]
            if name == "open" and not _writes(call):
                continue
            if name == "os.open" and not _open_flags_write(call):
                continue
        elif isinstance(call.func, ast.Attribute) and call.func.attr in _WRITING_METHODS:
            targets = [call.func.value]
        if any(_STATE_LAYOUT.search(ast.unparse(t)) for t in targets):
            found.append(f"{getattr(call, 'lineno', '?')} {ast.unparse(call)[:80]}")
    return found


def _writes(call: ast.Call) -> bool:
    mode = call.args[1] if len(call.args) > 1 else next(
        (k.value for k in call.keywords if k.arg == "mode"), None)
    return isinstance(mode, ast.Constant) and any(c in str(mode.value) for c in "wax+")


def _open_flags_write(call: ast.Call) -> bool:
    flags = ast.unparse(call.args[1]) if len(call.args) > 1 else ""
    return any(flag in flags for flag in ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC",
                                          "O_APPEND"))


def test_only_events_py_reads_the_event_log() -> None:
    offenders = []
    for module, tree in MODULES.items():
        if module in ("versatil_fs.events", "versatil_fs.state"):
            continue
        for call in _calls(tree):
            name = _dotted(call.func)
            reader = name in ("open", "os.open", "io.open") or name.rpartition(".")[2] in _READERS
            if reader and any("event_log" in ast.unparse(arg) for arg in call.args):
                offenders.append(_where(module, call))
    assert not offenders, f"the event log opened outside versatil_fs/events.py: {offenders}"


# StateDir's and pathlib's ways of reading a file (naming the log in a message is fine).
_READERS = {"read_bytes", "read_text", "open_checked", "read_range", "size", "open"}


def _imports(module: str, tree: ast.Module) -> set[str]:
    """The package modules ``module`` imports at import time (not inside functions, not under
    ``if TYPE_CHECKING``: those are deliberately deferred and cannot form a load cycle)."""
    found: set[str] = set()
    package = module if (PACKAGE / Path(*module.split(".")[1:]) / "__init__.py").exists() \
        else module.rpartition(".")[0]
    for node in tree.body:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("versatil_fs"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if not target.startswith("versatil_fs"):
                continue
            found.add(target)
            for alias in node.names:  # `from versatil_fs import events` imports a module
                if f"{target}.{alias.name}" in MODULES:
                    found.add(f"{target}.{alias.name}")
    return {name for name in found if name in MODULES and name != module}


def test_no_import_cycle() -> None:
    graph = {module: _imports(module, tree) for module, tree in MODULES.items()}
    # A package's __init__ that re-exports its own modules is not a cycle with them: drop the
    # edges from a module to the packages that contain it.
    for module, targets in graph.items():
        graph[module] = {t for t in targets if not module.startswith(t + ".")}
    cycles = [sorted(c) for c in _strongly_connected(graph) if len(c) > 1]
    assert not cycles, f"modules that import each other at import time: {cycles}"


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (the package is small, but recursion limits are not ours)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    found.append(component)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The guard above must be able to fail: a known cycle and a known acyclic graph."""
    cyclic = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert [sorted(c) for c in _strongly_connected(cyclic) if len(c) > 1] == [["a", "b", "c"]]
    assert all(len(c) == 1 for c in _strongly_connected({"a": {"b"}, "b": set()}))


def test_no_private_name_is_imported_across_modules() -> None:
    offenders = []
    for module, tree in MODULES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("versatil_fs"):
                offenders += [f"{_where(module, node)} {a.name}" for a in node.names
                              if a.name.startswith("_") and not a.name.startswith("__")]
    assert not offenders, f"a private name imported from another module: {offenders}"


def test_every_module_declares_all() -> None:
    missing = [module for module, tree in MODULES.items()
               if not module.endswith("__main__") and not _declares_all(tree)
               and tree.body]
    assert not missing, f"modules without __all__: {missing}"


def _declares_all(tree: ast.Module) -> bool:
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else [])
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            return True
    return False


ARCHITECTURE = ROOT / "ARCHITECTURE.md"


@pytest.mark.skipif(not ARCHITECTURE.exists(), reason="no ARCHITECTURE.md yet")
def test_every_module_architecture_md_names_exists() -> None:
    named = set(re.findall(r"`(versatil_fs/[\w/]+(?:\.py)?/?)`", ARCHITECTURE.read_text()))
    assert named, "ARCHITECTURE.md names no module in `versatil_fs/...` form"
    missing = sorted(name for name in named if not (ROOT / name.rstrip("/")).exists())
    assert not missing, f"ARCHITECTURE.md names modules that do not exist: {missing}"


# Packages the code map describes as a whole (one click module per command group).
_MAPPED_AS_A_WHOLE = ("versatil_fs/cli/",)


@pytest.mark.skipif(not ARCHITECTURE.exists(), reason="no ARCHITECTURE.md yet")
def test_architecture_md_maps_every_module() -> None:
    text = ARCHITECTURE.read_text()
    unmapped = []
    for module in MODULES:
        rel = module.replace(".", "/")
        spelled = f"{rel}.py" if (ROOT / f"{rel}.py").exists() else f"{rel}/"
        if f"`{spelled}`" in text or spelled.startswith(_MAPPED_AS_A_WHOLE):
            continue
        unmapped.append(spelled)
    assert not unmapped, f"modules missing from ARCHITECTURE.md's code map: {unmapped}"


def test_the_agent_hook_process_imports_nothing_heavy() -> None:
    """`versatil agent-hook` runs before every edit an agent makes: what its start imports
    beyond a bare interpreter's is the list below and nothing else (ARCHITECTURE.md)."""
    import subprocess
    import sys

    probe = (
        "import sys; before = set(sys.modules); import versatil_fs.cli, versatil_fs.agents.client;"
        "print('\\n'.join(sorted(set(sys.modules) - before)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    imported = set(done.stdout.split())
    ours = {m for m in imported if m.startswith("versatil_fs")}
    assert ours == {
        "versatil_fs", "versatil_fs.cli", "versatil_fs.agents", "versatil_fs.agents.client",
        "versatil_fs.agents.identity", "versatil_fs.agents.wire", "versatil_fs.linux",
    }
    heavy = {"click", "msgspec", "typing", "socket", "enum", "dataclasses", "json", "pathlib",
             "subprocess", "selectors", "ctypes"}
    assert not imported & heavy, sorted(imported & heavy)
