"""The remote halves of the managed training environment, as text: the probe of the base
Python (and `RemotePython`, what it reports), the check of a built environment, and the locked
build. No I/O here; `environment.py`
runs them over SSH with every value passed as a quoted argument, never spliced into the text.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RemotePython:
    """The base interpreter on the cluster, as `env_scripts.PROBE` reports it."""

    executable: str
    version: str
    implementation: str
    machine: str
    libc: str = ""


# Prints the base interpreter's facts that decide which environment it can host.
PROBE = """\
import json, os, platform, sys
print(json.dumps({
    "executable": os.path.realpath(sys.executable),
    "version": platform.python_version(),
    "implementation": platform.python_implementation(),
    "machine": platform.machine(),
    "libc": platform.libc_ver()[1],
}))
"""

# argv: mode ("build" or "check"), tmp folder, final folder, installer, imports (comma list),
# then the pinned requirements. In build mode it first rewrites the temporary folder's absolute
# path in bin/ (pip's script shebangs, activate) to the final one, so the renamed venv works.
# It prints the facts as JSON, or the problems on stderr with exit code 3.
CHECK = """\
import importlib, importlib.metadata as md, json, os, platform, sys
mode, tmp, final, installer, imports = sys.argv[1:6]
pins = sys.argv[6:]
if mode == "build":
    bin_dir = os.path.join(tmp, "bin")
    for name in os.listdir(bin_dir):
        path = os.path.join(bin_dir, name)
        if os.path.islink(path) or not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            data = f.read()
        if tmp.encode() in data and b"\\0" not in data:
            with open(path, "wb") as f:
                f.write(data.replace(tmp.encode(), final.encode()))
problems, versions = [], {}
for pin in pins:
    name, wanted = pin.split("==")
    try:
        got = md.version(name)
    except md.PackageNotFoundError:
        problems.append(f"{pin}: not installed")
        continue
    versions[name] = got
    if (got if "+" in wanted else got.split("+")[0]) != wanted:
        problems.append(f"{pin}: {got} is installed")
for module in filter(None, imports.split(",")):
    try:
        importlib.import_module(module)
    except Exception as exc:
        problems.append(f"import {module}: {type(exc).__name__}: {exc}")
if problems:
    print("\\n".join(problems), file=sys.stderr)
    sys.exit(3)
facts = {"python": platform.python_version(), "packages": versions}
if installer:
    facts["installer"] = installer
torch = sys.modules.get("torch")
if torch is not None:
    facts["torch"] = torch.__version__
    facts["cuda"] = torch.version.cuda
print(json.dumps(facts))
"""

# Marks the output lines the caller parses among whatever the user's setup lines print.
BUILT, REUSED, FAILED = "OCT_ENV_BUILT", "OCT_ENV_REUSED", "OCT_ENV_FAILED"
LOCK_TIMEOUT_EXIT = 75

# bash -c BUILD oct-env ENV_DIR BASE_PYTHON WAIT_S INDEX_URL WHEELS IMPORTS CHECK PIN...
# Under an flock on ENV_DIR.lock (the kernel drops it when its holder dies, so a dead builder
# never blocks the next one): reuse a published env; else remove dead builders' temporary
# folders, build into ENV_DIR.tmp-<pid> (uv when on PATH, else venv + pip), check it, write its
# marker, and publish it with one rename. The installer's output is appended to ENV_DIR.build.log
# (a header line per build), not sent to the SSH channel, so a dropped connection does not kill
# the build; its tail is printed on failure. The caller puts the user's setup lines first.
BUILD = f"""\
env_dir=$1 base=$2 wait_s=$3 index=$4 wheels=$5 imports=$6 check=$7
shift 7
lock="$env_dir.lock" log="$env_dir.build.log" marker="$env_dir/.oct-env.json"
mkdir -p -- "$(dirname -- "$env_dir")" || exit 1
exec 9>>"$lock" || exit 1
flock -E {LOCK_TIMEOUT_EXIT} -w "$wait_s" 9
locked=$?
if [ "$locked" -eq {LOCK_TIMEOUT_EXIT} ]; then
    echo "{FAILED} another build holds $lock (waited ${{wait_s}}s)" >&2
    exit {LOCK_TIMEOUT_EXIT}
elif [ "$locked" -ne 0 ]; then
    echo "{FAILED} cannot lock $lock (flock exit $locked): does its file system support flock?" >&2
    exit 1
fi
if [ -f "$marker" ]; then echo {REUSED}; exit 0; fi
rm -rf -- "$env_dir".tmp-* "$env_dir"
tmp="$env_dir.tmp-$$" prompt="oct-env-${{env_dir##*/}}"
trap 'rm -rf -- "$tmp"' EXIT
fail() {{ echo "{FAILED} $1 failed; last lines of $log:" >&2; tail -n 25 -- "$log" >&2; exit 1; }}
opts=()
[ -n "$index" ] && opts+=(--extra-index-url "$index")
[ -n "$wheels" ] && opts+=(--no-index --find-links "$wheels")
echo "== build $$ on $(hostname) $(date -Is)" >>"$log"
if command -v uv >/dev/null 2>&1; then
    installer=uv
    export UV_PYTHON_DOWNLOADS=never  # the base python, never one uv would fetch
    uv venv --python "$base" --prompt "$prompt" "$tmp" >>"$log" 2>&1 || fail "uv venv"
    uv pip install --python "$tmp/bin/python" ${{opts[@]+"${{opts[@]}}"}} "$@" >>"$log" 2>&1 \\
        || fail "uv pip install"
else
    installer=pip
    "$base" -m venv --prompt "$prompt" "$tmp" >>"$log" 2>&1 || fail "$base -m venv"
    "$tmp/bin/python" -m pip install --no-input --disable-pip-version-check \\
        ${{opts[@]+"${{opts[@]}}"}} "$@" >>"$log" 2>&1 || fail "pip install"
fi
PYTHONNOUSERSITE=1 "$tmp/bin/python" -c "$check" build "$tmp" "$env_dir" "$installer" \\
    "$imports" "$@" >"$tmp/.oct-env.partial" 2>>"$log" || fail "the check of the new environment"
mv -- "$tmp/.oct-env.partial" "$tmp/.oct-env.json" && mv -T -- "$tmp" "$env_dir" || fail "publish"
trap - EXIT
echo {BUILT}
"""
