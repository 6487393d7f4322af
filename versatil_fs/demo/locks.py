"""The demo's lock chapters: a hand-over, a shared read, a deadlock refused, a dead agent's
locks reclaimed, a commit refused, a rollback by agent."""

from __future__ import annotations

import time
from collections.abc import Callable

from versatil_fs import git
from versatil_fs.demo.stage import Demo, wait_until
from versatil_fs.errors import Deadlock, LockConflict

__all__ = [
    "CHAPTERS",
    "chapter_deadlock",
    "chapter_handoff",
    "chapter_reclaim",
    "chapter_refused_commit",
    "chapter_rollback",
    "chapter_shared_read",
]


def chapter_handoff(demo: Demo) -> None:
    demo.say("1. Two agents, one file: the second waits and is handed it the moment it frees.")
    marcus = demo.agent("Marcus-Backend", "src/api/")
    marcus.granted()
    demo.step("Marcus-Backend locks src/api/ (a directory lock covers everything below it).")
    waiting = demo.manager()
    dana = demo.agent("Dana-Database", "src/api/users.py")
    wait_until(lambda: any(w.agent == "Dana-Database" for w in waiting.sweep().waiters))
    demo.step("Dana-Database asks for src/api/users.py and waits in the queue.")
    released = time.monotonic_ns()
    marcus.finish()
    granted, waited = dana.granted()
    demo.step(
        f"Marcus finishes; Dana is granted {(granted - released) / 1e6:.1f} ms after the "
        f"release (waited {waited:.2f} s, no polling)."
    )
    dana.finish()


def chapter_shared_read(demo: Demo) -> None:
    demo.say("2. Reads are shared, writes are not.")
    james = demo.agent("James-Frontend", "db:users", mode="read")
    maria = demo.agent("Maria-QA", "db:users", mode="read")
    james.granted()
    maria.granted()
    demo.step("James-Frontend and Maria-QA both read db:users at the same time.")
    try:
        demo.manager().acquire(["db:users"], agent="Dana-Database", wait=0)
    except LockConflict as exc:
        demo.step(f"Dana-Database cannot write it now: {exc}")
    james.finish()
    maria.finish()


def chapter_deadlock(demo: Demo) -> None:
    demo.say("3. A deadlock is refused at once, naming the cycle.")
    manager = demo.manager()
    mine = manager.acquire(["src/models/user.py"], agent="Dana-Database", wait=0)
    marcus = demo.agent("Marcus-Backend", "src/api/auth.py")
    marcus.granted()
    # Marcus now also wants Dana's file and queues for it...
    marcus_more = demo.agent("Marcus-Backend", "src/models/user.py")
    wait_until(lambda: any(w.agent == "Marcus-Backend" for w in manager.sweep().waiters))
    demo.step("Dana holds src/models/user.py; Marcus holds src/api/auth.py and waits for Dana's.")
    try:
        manager.acquire(["src/api/auth.py"], agent="Dana-Database", wait=30)
    except Deadlock as exc:
        demo.step(f"Dana asks for src/api/auth.py: refused — {exc}")
    mine.release()
    marcus_more.granted()
    marcus_more.finish()
    marcus.finish()


def chapter_reclaim(demo: Demo) -> None:
    demo.say("4. A holder that dies (kill -9) loses its locks at once; nobody waits for a TTL.")
    james = demo.agent("James-Frontend", "src/ui/")
    james.granted()
    maria = demo.agent("Maria-QA", "src/ui/login.tsx")
    manager = demo.manager()
    wait_until(lambda: any(w.agent == "Maria-QA" for w in manager.sweep().waiters))
    killed = time.monotonic_ns()
    james.proc.kill()
    james.proc.wait()
    granted, _ = maria.granted()
    demo.step(
        f"James-Frontend is killed with SIGKILL; Maria-QA is granted "
        f"{(granted - killed) / 1e6:.1f} ms later (the kernel dropped its lease)."
    )
    maria.finish()


def chapter_refused_commit(demo: Demo) -> None:
    demo.say("5. The pre-commit guard refuses a commit of a file another agent holds.")
    from versatil_fs import hook

    demo.step(hook.install(demo.repo))
    lease = demo.manager().acquire(["src/models/"], agent="Dana-Database", owner="shell", wait=0)
    (demo.repo / "src/models/user.py").write_text("class User:\n    name: str\n    email: str\n")
    demo.git("add", "src/models/user.py")
    commit = git.run(
        ["commit", "-q", "-m", "add email"], cwd=demo.repo,
        env={"VERSATIL_AGENT": "Marcus-Backend"}, check=False,
    )
    refused = commit.returncode != 0
    demo.step(f"Marcus-Backend commits src/models/user.py: {'refused' if refused else 'allowed'}:")
    said = commit.stderr.decode(errors="replace").splitlines()
    for line in [line for line in said if line.strip()][:2]:
        demo.say(f"      {line.removeprefix('versatil: ').strip()}")
    demo.manager().unlock(["src/models/"], agent=lease.agent)
    demo.git("reset", "-q")
    demo.git("checkout", "--", "src/models/user.py")


def chapter_rollback(demo: Demo) -> None:
    demo.say("6. A checkpoint, then one agent's mess rolled back while another's edits stay.")
    from versatil_fs.checkpoints import Checkpoints, record_files_modified
    from versatil_fs.repo import Repository

    checkpoints = Checkpoints(demo.repo)
    before = checkpoints.create("before wave 2")
    demo.step(f"Checkpoint {before.id}: the whole working tree, without touching git's index.")
    repo = Repository.find(demo.repo)
    (demo.repo / "src/api/auth.py").write_text("def login(user, password):\n    return 'oops'\n")
    (demo.repo / "src/api/tokens.py").write_text("SECRET = 'half-written'\n")
    record_files_modified(repo, "Marcus-Backend", ["src/api/auth.py", "src/api/tokens.py"])
    (demo.repo / "src/ui/login.tsx").write_text("export const Login = () => 'sign in';\n")
    record_files_modified(repo, "James-Frontend", ["src/ui/login.tsx"])
    demo.step("Marcus-Backend breaks src/api/auth.py and adds src/api/tokens.py; "
              "James-Frontend edits src/ui/login.tsx.")
    result = checkpoints.restore(before.id, agent="Marcus-Backend", by="demo")
    demo.step(
        f"Restore Marcus-Backend's files only: restored {', '.join(result.restored) or '-'}; "
        f"removed {', '.join(result.removed) or '-'} (undo: restore {result.safety_checkpoint})."
    )
    kept = (demo.repo / "src/ui/login.tsx").read_text().strip()
    demo.step(f"James-Frontend's edit is still there: {kept}")


CHAPTERS: list[Callable[[Demo], None]] = [
    chapter_handoff,
    chapter_shared_read,
    chapter_deadlock,
    chapter_reclaim,
    chapter_refused_commit,
    chapter_rollback,
]
