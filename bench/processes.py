"""The per-process picture bench/fleet.py prints: PSS by kind for each process of a tree."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

# -- the per-process picture ------------------------------------------------------------------


def process_tree(pid: int) -> list[tuple[int, int, str, dict[str, float]]]:
    """(pid, depth, label, PSS MB by kind) of `pid` and its descendants, parents first.

    The kinds are smaps_rollup's `Pss`, `Pss_Anon`, `Pss_File` and `Pss_Shmem`. `Pss_File` (the
    Chromium binary's pages above all) is split with every other process mapping the same
    file, so it shrinks when other Chromiums run on the machine; anonymous memory does not.
    """
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    rows: list[tuple[int, int, str, dict[str, float]]] = []
    todo = [(pid, 0)]
    while todo:
        current, depth = todo.pop()
        todo.extend((c, depth + 1) for c in sorted(children.get(current, []), reverse=True))
        try:
            rows.append((current, depth, process_label(current), pss_mb_of(current)))
        except OSError:
            continue
    return rows


PSS_KINDS = ("Pss", "Pss_Anon", "Pss_File", "Pss_Shmem")


def pss_mb_of(pid: int) -> dict[str, float]:
    """PSS (MB) of one process, by kind (see `process_tree`)."""
    found = dict.fromkeys(PSS_KINDS, 0.0)
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in found:
            found[name] = int(rest.split()[0]) / 1024
    return found


def tree_pss(pid: int) -> dict[str, float]:
    """PSS (MB) of a process tree, by kind."""
    rows = process_tree(pid)
    return {kind: sum(r[3][kind] for r in rows) for kind in PSS_KINDS}


def other_chromiums(*roots: int) -> int:
    """Chromium processes on this machine outside the given trees (they share file pages)."""
    ours = {row[0] for root in roots for row in process_tree(root)}
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in ours:
            with contextlib.suppress(OSError):
                count += "chrom" in Path(os.readlink(f"/proc/{entry}/exe")).name
    return count


def process_label(pid: int) -> str:
    """What a process of an agent tree is: python, node driver, or chromium and its --type."""
    exe = Path(os.readlink(f"/proc/{pid}/exe")).name
    # Chromium rewrites its command line as one space-separated title (sometimes cut short).
    words = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().split()

    def flag(name: str) -> str:
        return next((w.split("=", 1)[1] for w in words if w.startswith(f"--{name}=")), "")

    if exe.startswith("python"):
        if "-m" in words:
            at = words.index("-m")
            return "python -m " + " ".join(words[at + 1 : at + 4])
        return "python -c (bare anchor script)" if "-c" in words else "python"
    if exe == "node":
        return "node (Playwright driver)"
    if "chrom" not in exe:
        return exe
    kind = flag("type")
    if not kind:  # title cut short: tell the kind by flags only it carries
        kind = (
            "renderer"
            if flag("renderer-client-id")
            else "gpu-process"
            if flag("gpu-preferences")
            else "utility"
            if flag("utility-sub-type")
            else "zygote"
            if "--no-zygote-sandbox" in words
            else "browser"
            if "--remote-debugging-pipe" in words and not flag("field-trial-handle")
            else "?"
        )
    extra = [flag("utility-sub-type")]
    if "--extension-process" in words:
        extra.append("extension")
    if "--top-chrome-webui" in words:
        extra.append("WebUI")
    details = ", ".join(e for e in extra if e)
    return f"chromium --type={kind}" + (f" ({details})" if details else "")


def print_tree(title: str, pid: int) -> None:
    rows = process_tree(pid)
    total = {kind: sum(r[3][kind] for r in rows) for kind in PSS_KINDS}
    print(
        f"{title}: {total['Pss']:.0f} MB PSS in {len(rows)} processes "
        f"(anon {total['Pss_Anon']:.0f}, file {total['Pss_File']:.0f}, "
        f"shmem {total['Pss_Shmem']:.0f}; {other_chromiums(pid)} other Chromium processes "
        "on this machine)"
    )
    print("      PSS     anon      pid  process")
    for child, depth, label, pss in rows:
        print(f"  {pss['Pss']:7.1f} {pss['Pss_Anon']:7.1f} MB {child:>7}  {'  ' * depth}{label}")
