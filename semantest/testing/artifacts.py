"""What a failed test leaves behind for each page it opened: a screenshot, the DOM and the
console log, in pytest-playwright's `--output` folder for the test (its `output_path`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import ConsoleMessage, Error, Page


@dataclass
class PageRecorder:
    """Pages opened during one test, with everything their consoles said."""

    pages: list[Page] = field(default_factory=list)
    consoles: list[list[str]] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        """Record `page`'s console messages and uncaught errors from now on."""
        lines: list[str] = []

        def console(message: ConsoleMessage) -> None:
            where = message.location
            at = f" ({where['url']}:{where['lineNumber']})" if where.get("url") else ""
            lines.append(f"[{message.type}] {message.text}{at}")

        def error(exc: Error) -> None:
            lines.append(f"[pageerror] {exc.name}: {exc.message}")

        page.on("console", console)
        page.on("pageerror", error)
        self.pages.append(page)
        self.consoles.append(lines)

    def console_of(self, page: Page) -> list[str]:
        """What `page`'s console said so far."""
        return self.consoles[self.pages.index(page)]

    def save(self, folder: Path, status: str, full_page: bool = False) -> list[tuple[str, Path]]:
        """Write `test-<status>-N.png`, `page-N.html` and `console-N.log` for every page
        (N from 1, in opening order); returns (kind, path) of each file written."""
        from playwright.sync_api import Error

        written: list[tuple[str, Path]] = []
        folder.mkdir(parents=True, exist_ok=True)
        for n, (page, lines) in enumerate(zip(self.pages, self.consoles, strict=True), 1):
            log = folder / f"console-{n}.log"
            log.write_text(f"{page.url}\n" + "".join(f"{line}\n" for line in lines))
            written.append(("console", log))
            if page.is_closed():
                continue
            try:
                shot = folder / f"test-{status}-{n}.png"
                page.screenshot(path=shot, timeout=5000, full_page=full_page)
                written.append(("screenshot", shot))
                dom = folder / f"page-{n}.html"
                dom.write_text(page.content())
                written.append(("dom", dom))
            except Error as exc:  # a crashed or navigating page: keep what we have
                log.write_text(log.read_text() + f"[semantest] page not captured: {exc.message}\n")
        return written

    def close(self) -> None:
        """Close every page still open."""
        for page in self.pages:
            if not page.is_closed():
                page.close()
