#!/usr/bin/env python3
"""Runs the documentation's runnable shell examples against a live stack.

Called by scripts/check-examples, which starts the stack and says where it is through
the environment (EXAMPLES_* below); the marking convention is described there. This
file finds the marked blocks (README.md, then the mdBook's pages in SUMMARY.md order),
runs each file's blocks in order in one bash process, checks every block's exit status,
the HTTP statuses its curls got and its output, and prints one line per block.

Standard library only (Python 3.11).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

# --------------------------------------------------------------------------- parsing

MARKER = re.compile(r"^\s*<!--\s*run(?:\s+(?P<attrs>.*?))?\s*-->\s*$")
ATTR = re.compile(r'\s*(?P<name>[a-z]+)=(?:"(?P<dq>[^"]*)"|\'(?P<sq>[^\']*)\'|(?P<bare>[^\s"\']+))')
# Any indentation: a fence in a list item is indented like the item's text.
FENCE_OPEN = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
SHELLS = {"bash", "sh"}
INCLUDE = re.compile(r"(?<!\\)\{\{#include\s+(?P<arg>[^}]+?)\s*\}\}")
ANCHOR_LINE = re.compile(r"ANCHOR(?:_END)?:\s*[\w-]+")


@dataclass
class Line:
    """One line of a page after mdBook's {{#include}} expansion, and where it came from."""

    text: str
    origin: str  # "path:line"


@dataclass
class Block:
    file: str  # the page it is read on (display path)
    where: str  # "path:line" of its opening fence
    text: str  # the code as written
    status: int | None = None
    expect: str | None = None
    marker_error: str | None = None
    lines: list[Line] = field(default_factory=list)  # as shown: marker, fences and code


def read_lines(path: Path, root: Path, depth: int = 0) -> list[Line]:
    """The page's lines with {{#include file}}, {{#include file:anchor}} and
    {{#include file:start:end}} expanded the way mdBook does, each line keeping its origin."""
    display = display_path(path, root)
    out: list[Line] = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = INCLUDE.search(text)
        if not match or depth > 10:
            out.append(Line(text, f"{display}:{number}"))
            continue
        included = include(path.parent, match["arg"], root, depth)
        if included is None:
            out.append(Line(text, f"{display}:{number}"))
            continue
        before, after = text[: match.start()], text[match.end() :]
        if included:
            included[0] = Line(before + included[0].text, included[0].origin)
            included[-1] = Line(included[-1].text + after, included[-1].origin)
        out.extend(included)
    return out


def include(base: Path, arg: str, root: Path, depth: int) -> list[Line] | None:
    name, _, selector = arg.partition(":")
    path = (base / name).resolve()
    if not path.is_file():
        return None
    lines = read_lines(path, root, depth + 1)
    if selector and not selector.replace(":", "").isdigit() and selector[0] != ":":
        start = next((i for i, l in enumerate(lines) if re.search(rf"ANCHOR:\s*{re.escape(selector)}\b", l.text)), None)
        if start is None:
            return []
        end = next(
            (i for i, l in enumerate(lines[start:], start) if re.search(rf"ANCHOR_END:\s*{re.escape(selector)}\b", l.text)),
            len(lines),
        )
        lines = lines[start + 1 : end]
    elif selector:
        first, _, last = selector.partition(":")
        lo = int(first) - 1 if first else 0
        hi = int(last) if last else len(lines)
        lines = lines[lo:hi]
    return [l for l in lines if not ANCHOR_LINE.search(l.text)]


def parse_marker(attrs: str | None) -> tuple[int | None, str | None, str | None]:
    """(status, expect, error) of a marker's attributes."""
    status = expect = None
    rest = attrs or ""
    while rest.strip():
        match = ATTR.match(rest)
        if not match:
            return status, expect, f"cannot read the marker's attributes at `{rest.strip()}`"
        value = next(v for v in (match["dq"], match["sq"], match["bare"]) if v is not None)
        if match["name"] == "status" and re.fullmatch(r"[1-5]\d\d", value):
            status = int(value)
        elif match["name"] == "expect" and value:
            expect = value
        else:
            return status, expect, f"unknown marker attribute `{match.group(0).strip()}` (run status=NNN expect=\"text\")"
        rest = rest[match.end() :]
    return status, expect, None


def find_blocks(path: Path, root: Path) -> list[Block]:
    """The marked blocks of one page: a `<!-- run … -->` line right before a ```bash or
    ```sh fence. Inside a fence nothing is looked at; a marker anywhere else that is not
    right before a fence is an error (a block meant to run that would not)."""
    lines = read_lines(path, root)
    display = display_path(path, root)
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        marker = MARKER.match(lines[i].text)
        if marker and not (i + 1 < len(lines) and FENCE_OPEN.match(lines[i + 1].text)):
            error = "a `<!-- run -->` marker not on the line right before a ```bash or ```sh fence"
            blocks.append(Block(display, lines[i].origin, "", marker_error=error, lines=[lines[i]]))
        opening = FENCE_OPEN.match(lines[i].text)
        if not opening:
            i += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        info = opening["info"].strip().split(",")[0].split()
        closing = re.compile(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        end = i + 1
        while end < len(lines) and not closing.match(lines[end].text):
            end += 1
        marker = MARKER.match(lines[i - 1].text) if i > 0 else None
        if marker:
            status, expect, error = parse_marker(marker["attrs"])
            if not info or info[0] not in SHELLS:
                error = f"`<!-- run -->` before a ```{' '.join(info)} fence: only bash and sh blocks run"
            body = lines[i + 1 : end]
            text = "\n".join(strip_indent(l.text, indent) for l in body)
            shown = [lines[i - 1], lines[i], *body, *lines[end : end + 1]]
            blocks.append(Block(display, lines[i].origin, text, status, expect, error, shown))
        i = end + 1
    return blocks


def strip_indent(text: str, indent: int) -> str:
    return text[min(indent, len(text) - len(text.lstrip(" "))) :]


def book_pages(root: Path) -> list[Path]:
    """The mdBook's pages in SUMMARY.md order (prefix, numbered and suffix chapters; draft
    chapters without a file are skipped); none when there is no book."""
    summary = root / "docs" / "src" / "SUMMARY.md"
    if not summary.is_file():
        return []
    pages: list[Path] = []
    in_fence = False
    for text in summary.read_text(encoding="utf-8").splitlines():
        if FENCE_OPEN.match(text):
            in_fence = not in_fence
        if in_fence:
            continue
        for target in re.findall(r"\[[^\]]*\]\(\s*<?([^)>]*?)>?\s*\)", text):
            target = target.split("#")[0]
            if target.endswith(".md"):
                page = (summary.parent / target).resolve()
                if page not in pages:
                    pages.append(page)
    return pages


def display_path(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


# ------------------------------------------------------------------------- rewriting


def rewrites() -> list[tuple[re.Pattern[str], str]]:
    """The documented addresses (scripts/dev's) → the stack's, and target/debug/ → the
    binaries the stack runs."""
    env = os.environ
    ports = {
        "8080": env["EXAMPLES_API_ADDR"],
        "1080": env["EXAMPLES_MAIL_UI_ADDR"],
        "1025": env["EXAMPLES_MAIL_SMTP_ADDR"],
        "9100": env["EXAMPLES_METRICS_ADDR"],
        "9101": env["EXAMPLES_WORKER_METRICS_ADDR"],
    }
    rules = []
    for port, addr in ports.items():
        new_port = addr.rsplit(":", 1)[1]
        # The host as written (localhost stays localhost: cookies treat it apart), the port the stack's.
        rules.append((re.compile(rf"(?<![\w.-])(127\.0\.0\.1|localhost):{port}(?!\d)"), rf"\g<1>:{new_port}"))
    rules.append((re.compile(r"(?<![\w./-])(?:\./)?target/debug/"), env["EXAMPLES_BIN"].rstrip("/") + "/"))
    return rules


def rewrite(text: str, rules: list[tuple[re.Pattern[str], str]]) -> str:
    for pattern, replacement in rules:
        text = pattern.sub(replacement, text)
    return text


# --------------------------------------------------------------------------- running

# `curl` in the examples' shells: a function around the real one that adds a --write-out (after the reader's own, if any) whose tail goes to stderr,
# where a filter takes out one record per transfer (status, curl's exit code, method,
# URL) into the block's status file and passes everything else through; stdout is the
# reader's alone, so `X=$(curl …)` and pipes see what they would. Records are appended
# to a file, so a curl inside $(…) or a pipe is counted too. Exit 28 (--max-time) after
# a 2xx answer is the end of a bounded stream: 0. The same function is behind a `curl`
# first in PATH, for curls that other programs start (timeout, xargs, env, bash -c).
CURL_FUNCTION = r"""
# curl's short options that take a value (`-H x`, `-Hx`; clusters like `-sSo f`).
__ex_valued=AbcCdDeEFHKmoPQrtTuUxXyYz
__ex_mark="@@example-status@@"

curl() {
  local -
  set +e +u +o pipefail
  local args=() fmt="" a j c kept value_next rec rc code all2xx
  while (($#)); do
    a=$1
    shift
    case $a in
      -w | --write-out) fmt=$1; shift ;;
      --*) args+=("$a") ;;
      -?*)
        kept=- value_next=0
        for ((j = 1; j < ${#a}; j++)); do
          c=${a:j:1}
          if [[ $c == w ]]; then
            if ((j + 1 < ${#a})); then fmt=${a:j+1}; else fmt=$1; shift; fi
            break
          fi
          kept+=$c
          if [[ $__ex_valued == *"$c"* ]]; then
            if ((j + 1 < ${#a})); then kept+=${a:j+1}; else value_next=1; fi
            break
          fi
        done
        [[ $kept != - ]] && args+=("$kept")
        if ((value_next)); then args+=("$1"); shift; fi
        ;;
      *) args+=("$a") ;;
    esac
  done
  case $fmt in
    @-) fmt=$(cat; echo .); fmt=${fmt%.} ;;
    @*) fmt=$(cat -- "${fmt#@}"; echo .); fmt=${fmt%.} ;;
  esac
  rec="$__ex_dir/curl.$BASHPID.$RANDOM"
  {
    "$__ex_curl" "${args[@]}" \
      -w "$fmt%{stderr}$__ex_mark %{response_code} %{exitcode} %{method} %{url_effective}\n" \
      2>&1 1>&3 3>&- |
      awk -v mark="$__ex_mark" -v rec="$rec" '{
        i = index($0, mark)
        if (i == 0) { print > "/dev/stderr"; fflush("/dev/stderr"); next }
        if (i > 1) { print substr($0, 1, i - 1) > "/dev/stderr"; fflush("/dev/stderr") }
        print "T" substr($0, i + length(mark)) >> rec
      }' 3>&-
    rc=${PIPESTATUS[0]}
  } 3>&1
  all2xx=0
  if [[ -s $rec ]]; then
    all2xx=1
    while read -r _ code _; do [[ $code == 2?? ]] || all2xx=0; done <"$rec"
  fi
  { cat "$rec" 2>/dev/null; printf 'C %s\n' "$rc"; } >>"$__ex_dir/status.$__ex_block"
  rm -f "$rec"
  ((rc == 28 && all2xx)) && rc=0
  return "$rc"
}
"""

# Sourced by each file's bash before its blocks.
PRELUDE = r"""
cd "$EXAMPLES_WORKDIR"
export __ex_dir=$EXAMPLES_STATE __ex_block=0 PATH="$EXAMPLES_STATE/bin:$PATH"
source "$__ex_dir/curl.bash"

# `cargo run … --bin api -- ARGS` runs the binary the stack runs (what scripts/dev
# built): no build, no wait on cargo's lock. Any other cargo command runs at the root.
cargo() {
  local a bin="" release=0 rest=() seen=0
  if [[ ${1:-} == run ]]; then
    shift
    while (($#)); do
      a=$1; shift
      case $a in
        --) seen=1; rest=("$@"); break ;;
        --bin | -p | --package) bin=$1; shift ;;
        --release | --profile | -r) release=1 ;;
      esac
    done
    if [[ -n $bin && $release == 0 && -x $EXAMPLES_BIN/$bin ]]; then
      "$EXAMPLES_BIN/$bin" "${rest[@]}"
      return
    fi
    echo "check-examples: only \`cargo run [-q] --bin api|worker -- …\` is supported in examples" >&2
    return 2
  fi
  (cd "$EXAMPLES_ROOT" && command cargo "$@")
}

__ex_begin() { __ex_block=$1; : >"$__ex_dir/status.$1"; printf 'begin %s %s\n' "$1" "$EPOCHREALTIME" >>"$__ex_dir/progress"; }
__ex_end() { printf 'end %s %s\n' "$1" "$EPOCHREALTIME" >>"$__ex_dir/progress"; }
"""

# One block in the file's shell: in that shell (variables, functions and cd carry over
# to the next block), with errexit, its output (stdout and stderr) to its own file.
STEP = """
__ex_begin {n}
set -euo pipefail
{{ eval "$(<"$__ex_dir/block.{n}")"
}} >"$__ex_dir/out.{n}" 2>&1 </dev/null
set +euo pipefail
__ex_end {n}
"""


REAL_CURL = shutil.which("curl") or "/usr/bin/curl"


@dataclass
class Result:
    block: Block
    state: str  # ok | failed | skipped
    seconds: float = 0.0
    why: str = ""
    output: str = ""
    transfers: list[tuple[int, int, str, str]] = field(default_factory=list)


def run_file(blocks: list[Block], state: Path, timeout: float, verbose: bool) -> list[Result]:
    """Runs one file's blocks in order in one bash process."""
    state.mkdir(parents=True)
    rules = rewrites()
    (state / "curl.bash").write_text(CURL_FUNCTION)
    (state / "bin").mkdir()
    shim = state / "bin" / "curl"
    shim.write_text('#!/usr/bin/env bash\nsource "$__ex_dir/curl.bash"\ncurl "$@"\n')
    shim.chmod(0o755)
    script = [PRELUDE]
    for n, block in enumerate(blocks, start=1):
        # A block whose marker is wrong fails unrun (its text may not even be shell).
        text = "" if block.marker_error else rewrite(block.text, rules)
        (state / f"block.{n}").write_text(text + "\n")
        script.append(STEP.format(n=n))
    (state / "driver.sh").write_text("".join(script))
    env = dict(os.environ, EXAMPLES_STATE=str(state), __ex_curl=REAL_CURL)
    proc = subprocess.Popen(
        ["bash", "--noprofile", "--norc", str(state / "driver.sh")],
        stdin=subprocess.DEVNULL,
        stdout=open(state / "shell.log", "wb"),
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    results: list[Result] = []
    progress = state / "progress"
    timed_out = None

    def judge_ended() -> dict[int, float]:
        """Judges the blocks that ended since the last call; returns when each began."""
        begun, ended = read_progress(progress)
        while len(results) < len(blocks) and len(results) + 1 in ended:
            n = len(results) + 1
            results.append(judge(blocks[n - 1], state, n, ended[n] - begun[n], exit_code=0))
            report(results[-1], verbose)
        return begun

    while True:
        begun = judge_ended()
        if len(results) == len(blocks) or proc.poll() is not None:
            break
        current = len(results) + 1
        if current in begun and time.time() - begun[current] > timeout:
            timed_out = time.time() - begun[current]
            stop(proc)
            break
        time.sleep(0.05)
    proc.wait()
    stop(proc)  # whatever the blocks left running in the background
    judge_ended()  # what ended between the last look and the shell's exit
    done = len(results)
    if done < len(blocks):
        n = done + 1
        begun, _ = read_progress(progress)
        elapsed = time.time() - begun[n] if n in begun else 0.0
        if n not in begun:
            result = Result(blocks[n - 1], "failed", 0.0, "the file's shell ended before this block began")
            result.output = (state / "shell.log").read_text(errors="replace")
        elif timed_out:
            result = judge(blocks[n - 1], state, n, timed_out, exit_code=None)
            result.state, result.why = "failed", f"timed out after {timeout:g} s"
        else:
            result = judge(blocks[n - 1], state, n, elapsed, exit_code=proc.returncode)
            if result.state == "ok":  # `exit 0` in a block: the file's later blocks could not run
                result.state, result.why = "failed", "the block ended the file's shell (exit 0)"
        results.append(result)
        report(result, verbose)
        for block in blocks[n:]:
            results.append(Result(block, "skipped", why=f"{blocks[n - 1].where} failed and ended the file's shell"))
            report(results[-1])
    return results


def read_progress(progress: Path) -> tuple[dict[int, float], dict[int, float]]:
    """When each block began and ended ($EPOCHREALTIME, whose decimal point is the locale's)."""
    begun: dict[int, float] = {}
    ended: dict[int, float] = {}
    for event in progress.read_text().splitlines() if progress.exists() else []:
        parts = event.split()
        if len(parts) == 3:
            {"begin": begun, "end": ended}[parts[0]][int(parts[1])] = float(parts[2].replace(",", "."))
    return begun, ended


def stop(proc: subprocess.Popen) -> None:
    """Ends the file's shell and everything it started (its own process group)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.time() + 2
        while time.time() < deadline:
            proc.poll()  # reaps the shell: a zombie still counts in its group
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


def judge(block: Block, state: Path, n: int, seconds: float, exit_code: int | None) -> Result:
    out_file = state / f"out.{n}"
    output = out_file.read_text(errors="replace") if out_file.exists() else ""
    transfers = []
    status_file = state / f"status.{n}"
    for line in status_file.read_text().splitlines() if status_file.exists() else []:
        if line.startswith("T "):
            parts = line.split(" ", 4)
            if len(parts) == 5:
                transfers.append((int(parts[1]), int(parts[2]), parts[3], parts[4]))
    result = Result(block, "ok", seconds, output=output, transfers=transfers)
    why = []
    if block.marker_error:
        why.append(block.marker_error)
    if exit_code:
        why.append(f"exited {exit_code}")
    checked = transfers
    if block.status is not None:
        if not transfers:
            why.append(f"expected a curl answered {block.status}; no curl ran")
        else:
            code, curl_exit, method, url = transfers[-1]
            if code != block.status:
                why.append(f"the last curl got {code:03d}, not {block.status}: {method} {url}")
            checked = transfers[:-1]
    for code, curl_exit, method, url in checked:
        if code >= 400:
            why.append(f"curl got {code}: {method} {url}")
        elif code == 0 and curl_exit != 0:
            why.append(f"curl got no answer (curl exit {curl_exit}): {method} {url}")
    if block.expect is not None and block.expect not in output:
        why.append(f"the output does not contain {block.expect!r}")
    if why:
        result.state, result.why = "failed", "; ".join(why)
    return result


def report(result: Result, verbose: bool = False) -> None:
    block = result.block
    if result.state == "ok":
        print(f"{block.where} ok {result.seconds:.1f}s", flush=True)
        if verbose:
            details(result)
        return
    if result.state == "skipped":
        print(f"{block.where} skipped: {result.why}", flush=True)
        return
    print(f"{block.where} FAILED {result.seconds:.1f}s: {result.why}")
    details(result)


def details(result: Result) -> None:
    block = result.block
    print("  the block:")
    page = block.where.rsplit(":", 1)[0]
    for line in block.lines:
        path, number = line.origin.rsplit(":", 1)
        print(f"    {number if path == page else line.origin:>5} | {line.text}")  # included lines say from where
    tail = result.output.rstrip("\n").split("\n")[-40:] if result.output.strip() else []
    print(f"  its output (last {len(tail)} lines):" if tail else "  its output: (none)")
    for line in tail:
        print(f"    {line}")
    if result.transfers:
        print("  curl statuses (status, curl exit code, method, URL):")
        for code, curl_exit, method, url in result.transfers:
            print(f"    {code:03d} {curl_exit:>2} {method} {url}")
    else:
        print("  curl statuses: no curl ran")
    sys.stdout.flush()


# ------------------------------------------------------------------------------ main


def collect(args: argparse.Namespace, root: Path) -> list[tuple[str, list[Block]]]:
    if args.files:
        paths = [Path(f).resolve() for f in args.files]
    else:
        paths = [root / "README.md"]
        for page in book_pages(root):
            if page.is_file():
                paths.append(page)
            else:  # scripts/check-docs fails on it; the examples of the other pages still run
                print(f"check-examples: warning: SUMMARY.md lists {display_path(page, root)}, which does not exist")
    missing = [p for p in paths if not p.is_file()]
    if missing:
        sys.exit("check-examples: no such file: " + ", ".join(display_path(p, root) for p in missing))
    files = [(display_path(p, root), find_blocks(p, root)) for p in paths]
    if not args.files:
        listed = set(paths)
        book = root / "docs" / "src"
        for page in sorted(book.rglob("*.md")) if book.is_dir() else []:
            if page.resolve() not in listed and page.name != "SUMMARY.md" and find_blocks(page, root):
                print(f"check-examples: warning: {display_path(page, root)} has marked blocks but is not in SUMMARY.md: not run")
    return [(name, blocks) for name, blocks in files if blocks]


def selftest_verdicts(results: list[Result]) -> int:
    """In the fixture, `# selftest: fails` / `# selftest: skipped` in a block says what
    the runner must make of it; every other block must pass."""
    wrong = 0
    for result in results:
        text = "\n".join(line.text for line in result.block.lines)
        match = re.search(r"#\s*selftest:\s*(fails|skipped)", text)
        wanted = {"fails": "failed", "skipped": "skipped"}[match[1]] if match else "ok"
        if result.state != wanted:
            print(f"selftest: {result.block.where} was judged {result.state}, the fixture says {wanted}")
            wrong += 1
    verdict = "as the fixture says" if not wrong else f"{wrong} judged wrongly"
    print(f"selftest: {len(results)} blocks, {verdict}")
    return 1 if wrong else 0


def main() -> int:
    parser = argparse.ArgumentParser(description="Run the documentation's marked shell examples (scripts/check-examples).")
    parser.add_argument("files", nargs="*", help="markdown files (default: README.md, then docs/src in SUMMARY.md order)")
    parser.add_argument("--root", default=".", help="the repository root (README.md, docs/src/SUMMARY.md)")
    parser.add_argument("--timeout", type=float, default=float(os.environ.get("EXAMPLES_TIMEOUT", 60)))
    parser.add_argument("--verbose", action="store_true", help="show every block's output and statuses, not only a failed one's")
    parser.add_argument("--list", action="store_true", help="only list the marked blocks; exit 1 if there are none")
    parser.add_argument("--selftest", action="store_true", help="judge the runner's verdicts by the fixture's `# selftest:` notes")
    args = parser.parse_args()
    root = Path(args.root).resolve()
    files = collect(args, root)
    total = sum(len(blocks) for _, blocks in files)
    if args.list:
        for _, blocks in files:
            for block in blocks:
                attrs = (f" status={block.status}" if block.status else "") + (f' expect="{block.expect}"' if block.expect else "")
                print(f"{block.where} run{attrs}" + (f"  ({block.marker_error})" if block.marker_error else ""))
        print(f"examples: {total} marked blocks in {len(files)} files")
        return 0 if total else 1
    if total == 0:
        print("examples: no marked blocks found (<!-- run --> before a ```bash or ```sh fence): nothing checked")
        return 1
    started = time.time()
    state = Path(os.environ["EXAMPLES_STATE_DIR"])
    results: list[Result] = []
    for index, (name, blocks) in enumerate(files, start=1):
        slug = re.sub(r"[^\w.-]", "_", name)
        results += run_file(blocks, state / f"{index}-{slug}", args.timeout, args.verbose)
    failed = [r for r in results if r.state == "failed"]
    skipped = [r for r in results if r.state == "skipped"]
    counted = f"{total} block{'s' * (total != 1)} in {len(files)} file{'s' * (len(files) != 1)}"
    print(f"examples: ran in {time.time() - started:.0f} s")
    if args.selftest:
        print(f"examples: {counted}, {len(failed)} failed, {len(skipped)} skipped")
        return selftest_verdicts(results)
    if not failed and not skipped:
        print(f"examples: {counted}, all passed")
        return 0
    print(f"examples: {counted}, {len(failed)} failed, {len(skipped)} skipped: " + " ".join(r.block.where for r in failed))
    return 1


if __name__ == "__main__":
    sys.exit(main())
