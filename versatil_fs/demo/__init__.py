"""``versatil demo``: the whole story on a throwaway repository, in a few seconds.

Every agent in the demo is a real process taking real locks through the public API; the demo
builds its repository and its state directory in a temporary directory and removes both, so it
never touches the user's own ``~/.versatil``. The chapters live one group per module:
:mod:`~versatil_fs.demo.locks` (the lock story), :mod:`~versatil_fs.demo.agents` (two agent
sessions claiming files from their harness's hooks) and :mod:`~versatil_fs.demo.waves` (the plan
run in waves), all on :mod:`~versatil_fs.demo.stage`; this module only runs them in order.
"""

from __future__ import annotations

from collections.abc import Callable

from versatil_fs.demo.stage import Demo, throwaway

__all__ = ["chapters", "run"]


def chapters() -> list[Callable[[Demo], None]]:
    """The lock story, agent sessions claiming files from their own hooks, then the whole
    plan run in waves (its own module: it needs the executor, the monitor and the example
    plan)."""
    from versatil_fs.demo import agents, locks, waves

    return [*locks.CHAPTERS, *agents.CHAPTERS, *waves.CHAPTERS]


def run(out: Callable[[str], None] = print, keep: bool = False) -> None:
    with throwaway(keep) as (repo, home):
        out(f"versatil demo: a throwaway repository at {repo}")
        out(f"(state in {home}; your own ~/.versatil is not touched)\n")
        demo = Demo(repo=repo, out=out)
        try:
            for chapter in chapters():
                chapter(demo)
                out("")
        finally:
            for proc in demo.processes:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        out("Every grant, wait, release and reclaim above is an event in the log:")
        if keep:
            out(f"  VERSATIL_HOME={home} versatil logs locks --tail 20")
        else:
            out("  rerun with --keep to browse it: versatil demo --keep")
