"""The shape of the app, as issue 21 asks it to stay: records per life cycle, background jobs
beside their code, no import circles, no import hidden in a function to dodge one, templates
that read on one screen."""

from __future__ import annotations

import ast
from pathlib import Path

from kickouts.models import RetryAttempt

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "kickouts"
SKIPPED = {"migrations", "sandbox"}


def app_modules() -> dict[str, Path]:
    """The app's own modules (not its migrations or the sandbox, a process of its own)."""
    modules = {}
    for path in APP.rglob("*.py"):
        if SKIPPED & set(path.relative_to(APP).parts):
            continue
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The modules an import statement names, made absolute."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = module.split(".")
        base = base[: len(base) - node.level + (1 if is_package else 0)]
        full = ".".join(base + ([node.module] if node.module else []))
    else:
        full = node.module or ""
    return [full] + [f"{full}.{alias.name}" for alias in node.names]


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """Module → the app modules it imports at module level; and imports inside functions."""
    modules = app_modules()
    graph, hidden = {}, []
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        package = path.name == "__init__.py"
        graph[name] = {
            target
            for node in tree.body
            for target in imported(node, name, package)
            if target in modules and target != name
        }
        for function in ast.walk(tree):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(function):
                    if any(t in modules for t in imported(node, name, package)):
                        hidden.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return graph, hidden


def test_the_retry_record_keeps_what_was_asked_and_answered_in_at_most_32_fields():
    """The follow-up, the comparison and the email are records of their own."""
    names = [field.name for field in RetryAttempt._meta.concrete_fields]
    assert len(names) <= 32, names
    assert not [n for n in names if n.startswith(("follow", "compare", "notif"))], names


def test_there_is_no_import_circle_and_no_import_hidden_in_a_function():
    """Shared pieces sit a level down instead (the before-stop check, as a test)."""
    graph, hidden = import_graph()
    assert hidden == []

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    circles = [name for name in graph if reaches(name, name, {name})]
    assert circles == []


def test_each_background_task_lives_in_the_module_whose_work_it_does():
    """No hub: `kickouts/tasks.py` is gone, and each @task sits beside its logic."""
    assert not (APP / "tasks.py").exists()
    homes = {}
    for name, path in app_modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                for decorator in node.decorator_list:
                    target = decorator.func if isinstance(decorator, ast.Call) else decorator
                    if getattr(target, "id", "") == "task":
                        homes[node.name] = name
    assert homes == {
        "follow_due": "kickouts.follow_up",
        "send_due_bulks": "kickouts.bulk",
        "refresh_kickout_queue": "kickouts.snapshots",
        "take_kickout_snapshots": "kickouts.snapshots",
    } | {name: home for name, home in homes.items() if home not in _OLD_HOMES}


# Modules whose tasks the test above names exactly; tasks added elsewhere (a new module's own
# job) are allowed, as long as they are not gathered in a hub.
_OLD_HOMES = {"kickouts.follow_up", "kickouts.bulk", "kickouts.snapshots"}


def test_no_template_line_is_over_160_characters():
    """A template reads on one screen: long lines are split where HTML ignores the break."""
    long_lines = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "templates").rglob("*"))
        if path.suffix in {".html", ".txt"}
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if len(line) > 160
    ]
    assert long_lines == []


def test_no_template_comment_spans_lines():
    """`{# … #}` ends on its own line: split over two, Django shows it on the page as text
    (seen on the retry form). Longer comments use {% comment %}."""
    open_comments = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "templates").rglob("*"))
        if path.suffix in {".html", ".txt"}
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if line.count("{#") != line.count("#}")
    ]
    assert open_comments == []
