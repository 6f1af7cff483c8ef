"""Open every page of the built book in a real (headless) browser and fail on what a learner would see.

    python tools/check_book.py                       # _build/html, screenshots to _build/screenshots
    python tools/check_book.py --html path/to/html --screenshots out/

For each page it checks, offline (every request outside the book's folder is refused and counted):

* nothing is fetched from the network (a CDN script, a web font): the book must read offline;
* no error or traceback is shown (an executed cell that failed, a Sphinx "problematic" node);
* every image loads (non-zero natural size);
* every formula was typeset by MathJax (no raw LaTeX left);
* no cross-reference is unresolved;
* the browser's console logs no error.

A full-page screenshot of each page is saved (the CI keeps them). The exit code is 1 when a page
fails, 2 when no browser is available. The browser is Debian's Chromium (``apt-get install
chromium``) driven through Playwright; ``CHROMIUM`` names another executable.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP = {"search.html", "genindex.html"}

PAGE_CHECKS = r"""
async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  const text = document.body ? document.body.innerText : "";
  const images = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute("src"));
  const mathNodes = [...document.querySelectorAll("span.math, div.math")];
  const rawMath = mathNodes.filter(n => !n.querySelector("mjx-container")).map(n => n.textContent.slice(0, 60));
  const unresolved = [...document.querySelectorAll("span.xref, code.xref")].filter(n => !n.closest("a"))
                       .map(n => n.textContent.slice(0, 60));
  const problems = [...document.querySelectorAll(".problematic, .system-message")].map(n => n.textContent.slice(0, 120));
  const errors = [...document.querySelectorAll(".output.traceback, .output.error, div.output_area.stderr pre")]
                   .map(n => n.textContent.slice(0, 160))
                   .filter(t => /Traceback|Error/.test(t));
  return {title: document.title, images, rawMath, unresolved, problems, errors, mathCount: mathNodes.length,
          traceback: /Traceback \(most recent call last\)/.test(text)};
}
"""


def find_browser() -> str | None:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and (shutil.which(name) or Path(name).exists()):
            return shutil.which(name) or name
    return None


def _is_redirect(page: Path) -> bool:
    """Jupyter Book's index.html only forwards to the root page (checked as itself)."""
    head = page.read_text(encoding="utf-8", errors="replace")[:2000].lower()
    return 'http-equiv="refresh"' in head


def check_pages(html: Path, shots: Path, browser: str) -> list[dict]:
    from playwright.sync_api import sync_playwright

    pages = sorted(p for p in html.rglob("*.html") if p.name not in SKIP and "_static" not in p.parts
                   and "_sources" not in p.parts and not _is_redirect(p))
    shots.mkdir(parents=True, exist_ok=True)
    results = []
    base = html.resolve().as_uri()
    with sync_playwright() as pw:
        chrome = pw.chromium.launch(executable_path=browser, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                          "--disable-component-update", "--no-first-run", "--disable-sync"])
        for path in pages:
            context = chrome.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            external, console = [], []

            def route(r):
                if r.request.url.startswith(base) or r.request.url.startswith("data:"):
                    r.continue_()
                else:
                    external.append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
            page.goto(path.resolve().as_uri(), wait_until="load")
            page.wait_for_load_state("networkidle")
            found = page.evaluate(PAGE_CHECKS)
            name = str(path.relative_to(html))
            page.screenshot(path=str(shots / (name.replace("/", "__")[:-5] + ".png")), full_page=True)
            context.close()
            issues = []
            if external:
                issues.append(f"fetches from the network: {sorted(set(external))[:3]}")
            if found["traceback"] or found["errors"]:
                issues.append(f"shows an error: {found['errors'][:2] or 'a traceback'}")
            if found["images"]:
                issues.append(f"broken images: {found['images'][:3]}")
            if found["rawMath"]:
                issues.append(f"{len(found['rawMath'])} formula(s) not typeset, e.g. {found['rawMath'][0]!r}")
            if found["unresolved"]:
                issues.append(f"unresolved references: {found['unresolved'][:3]}")
            if found["problems"]:
                issues.append(f"Sphinx problems: {found['problems'][:2]}")
            errors = [c for c in console if not any(k in c for k in ("favicon", "ERR_FAILED", "theme mode"))]
            if errors:
                issues.append(f"console errors: {errors[:2]}")
            results.append({"page": name, "title": found["title"], "formulas": found["mathCount"], "issues": issues})
        chrome.close()
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--html", default=str(ROOT / "_build" / "html"))
    ap.add_argument("--screenshots", default=str(ROOT / "_build" / "screenshots"))
    args = ap.parse_args(argv)
    html = Path(args.html)
    if not (html / "index.html").exists():
        print(f"check_book: no built book at {html} (run the book build first).", file=sys.stderr)
        return 2
    browser = find_browser()
    if browser is None:
        print("check_book: no Chromium found (apt-get install chromium, or set CHROMIUM=/path/to/chrome).",
              file=sys.stderr)
        return 2
    results = check_pages(html, Path(args.screenshots), browser)
    (Path(args.screenshots) / "report.json").write_text(json.dumps(results, indent=2))
    bad = [r for r in results if r["issues"]]
    for r in results:
        print(f"{'FAIL' if r['issues'] else 'ok  '} {r['page']:<45} {r['formulas']:>4} formulas  "
              + "; ".join(r["issues"]))
    print(f"{len(results)} pages, {len(bad)} with problems; screenshots in {args.screenshots}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
