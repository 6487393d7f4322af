"""Agents taking part themselves: the harness hooks that claim a file at the moment of the edit
and deny an edit another agent's lock stands against, the session keeper whose life proves the
session's, and ``versatil integrate``. See ARCHITECTURE.md ("Agents")."""

from __future__ import annotations

__all__: list[str] = []
