"""The hostile-input survey: bad inputs and faults across the commands, as a table.

Each case runs as a real ``xmr`` process (bash) on a small synthetic run made with the toy
encoders, and the table shows the exit status and what the user is told (the ``xmr: error``
line, or the last line). Cases that need a small or read-only filesystem mount a tmpfs, so run
this as root (as CI does); without root they are listed as skipped.

    python benchmarks/hostile_inputs.py [--out benchmarks/results/hostile_inputs.md] [--groups issue25-data ...]

The table is printed, and written only where ``--out`` says. Each case runs in a process group of
its own, and whatever it left running is killed by that group's id when it ends: the script signals
only processes it started.

Run it against another checkout's code with ``PYTHONPATH=<checkout>/src`` to compare.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from xmr.bench.shapes import make_shapes_dataset

HERE = Path(__file__).resolve().parent

TOY = "--image-encoder toy-image --text-encoder toy-text"
T = f"{TOY} --embed-dim 32 --epochs 3 --batch-size 16 --patience 0"
# small helper scripts written into each case folder (python <name> ...)
HELPERS = {
    "bomb.py": """import io, struct, sys, zlib
from PIL import Image
buf = io.BytesIO()
Image.new("L", (8, 8)).save(buf, "PNG")
d = bytearray(buf.getvalue())
d[16:24] = struct.pack(">II", 20000, 20000)  # the header declares 20000 x 20000
d[29:33] = struct.pack(">I", zlib.crc32(bytes(d[12:29])))
open(sys.argv[1], "wb").write(bytes(d))
""",
    "add.py": """import json, sys  # add.py IMAGE [SPLIT]: data/m.jsonl = the manifest + one item with IMAGE
rows = open("data/manifest.jsonl").read()
bad = {"id": "bad/0", "image": sys.argv[1], "texts": ["a bad item"], "split": sys.argv[2] if len(sys.argv) > 2 else "train"}
open("data/m.jsonl", "w").write(rows + json.dumps(bad) + "\\n")
""",
    "kill2.py": """import os, signal, sys  # xmr, killed right after the 2nd model.safetensors is renamed into place
real, count = os.replace, [0]
def replace(a, b, *x, **k):
    real(a, b, *x, **k)
    if str(b).endswith("model.safetensors"):
        count[0] += 1
        if count[0] == 2:
            os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
from xmr.cli import main
sys.exit(main(sys.argv[1:]))
""",
    "check.py": """import hashlib, json, sys  # check.py BEST: do the weights match model.json's id?
from safetensors.torch import load_file
s = load_file(sys.argv[1] + "/model.safetensors")
h = hashlib.sha1()
for k in sorted(s):
    h.update(k.encode())
    h.update(s[k].numpy().tobytes())
m = json.load(open(sys.argv[1] + "/model.json"))
ok = h.hexdigest()[:16] == m["model_id"]
print(f"weights {h.hexdigest()[:16]}, model.json {m['model_id']} (epoch {m.get('epoch')}): {'consistent' if ok else 'TORN'}")
""",
}
MNT = "mkdir -p {d} && mount -t tmpfs -o size={s} tmpfs {d}"
FILL = "(cat /dev/zero > {d}/filler 2>/dev/null; true)"

# (item of the report, case, bash); every case starts in a copy of the work folder
REPORTED = [
    ("1", "index --out the run folder", "xmr index run --split test --out run ;; ls run | tr '\\n' ' '"),
    ("1", "index --out a folder of other files", "mkdir victim; echo x > victim/notes.txt; "
     "xmr index run --split test --out victim ;; cat victim/notes.txt"),
    ("1", "index --out a file", "echo keep > afile; xmr index run --split test --out afile ;; cat afile"),
    ("2", "kill -9 right after the 2nd best's weights are written",
     f"python kill2.py train data/manifest.jsonl --out rk {TOY} --embed-dim 32 --epochs 6 --batch-size 16 "
     "--patience 0 ;; python check.py rk/best"),
    ("3", "another run's model.safetensors copied in, then eval", f"xmr -q train data/manifest.jsonl --out r1 {T} --seed 1 "
     "&& cp r1/best/model.safetensors run/best/ && xmr eval run"),
    ("4", "missing image (encode)", f"python add.py img/none.png && xmr encode data/m.jsonl {TOY}"),
    ("4", "truncated image (encode)", f"head -c 120 data/img/red-circle-0.png > t.png && python add.py $PWD/t.png "
     f"&& xmr encode data/m.jsonl {TOY}"),
    ("4", "0-byte image (encode)", f": > z.png && python add.py $PWD/z.png && xmr encode data/m.jsonl {TOY}"),
    ("4", "non-image file (encode)", f"echo text > n.png && python add.py $PWD/n.png && xmr encode data/m.jsonl {TOY}"),
    ("4", "a directory as image (encode)", f"mkdir d.png && python add.py $PWD/d.png && xmr encode data/m.jsonl {TOY}"),
    ("4", "an SVG as image (encode)", f"echo '<svg xmlns=\"http://www.w3.org/2000/svg\"/>' > s.svg && "
     f"python add.py $PWD/s.svg && xmr encode data/m.jsonl {TOY}"),
    ("4", "truncated image (train)", f"head -c 120 data/img/red-circle-0.png > t.png && python add.py $PWD/t.png "
     f"&& xmr train data/m.jsonl --out rb {T}"),
    ("4", "truncated image (index --manifest)", "head -c 120 data/img/red-circle-0.png > t.png && "
     "python add.py $PWD/t.png test && xmr index run --manifest data/m.jsonl --split test --out ib"),
    ("4", "truncated image, --skip-bad (train)", f"head -c 120 data/img/red-circle-0.png > t.png && "
     f"python add.py $PWD/t.png && xmr -q train data/m.jsonl --out rb {T} --skip-bad ;; cat rb/skipped.jsonl"),
    ("5", "16-bit greyscale PNG (I;16) vs its 8-bit copy",
     "python -c \"import numpy as np; from PIL import Image; g=np.tile(np.linspace(0,255,64).astype(np.uint8),(64,1)); "
     "Image.fromarray(g).save('g8.png'); Image.fromarray(g.astype(np.uint16)*257).save('g16.png'); "
     "from xmr.encoders.image_io import image_to_array as a; d=np.abs(a('g16.png',32).astype(int)-a('g8.png',32)); "
     "print('I;16 vs 8-bit: max abs difference', d.max(), 'of 255; white pixels', (a('g16.png',32)==255).mean())\""),
    ("6", "a FIFO as image (encode)", f"mkfifo p.png && python add.py $PWD/p.png && timeout 60 xmr encode data/m.jsonl {TOY}"),
    ("6", "/dev/zero as image (encode)", f"python add.py /dev/zero && timeout 60 xmr encode data/m.jsonl {TOY}"),
    ("7", "decompression bomb (encode)", f"python bomb.py b.png && python add.py $PWD/b.png && xmr encode data/m.jsonl {TOY}"),
    ("7", "decompression bomb (encode --skip-bad)", f"python bomb.py b.png && python add.py $PWD/b.png && "
     f"xmr -q encode data/m.jsonl {TOY} --skip-bad"),
    ("7", "decompression bomb (index --manifest)", "python bomb.py b.png && python add.py $PWD/b.png test && "
     "xmr index run --manifest data/m.jsonl --split test --out ib"),
    ("7", "decompression bomb (search --image)", "python bomb.py b.png && xmr search run --image b.png"),
    ("7", "10,524 x 16,000 RGBA PNG as a query: peak RSS",
     "python -c \"import numpy as np; from PIL import Image; r=np.random.default_rng(0); "
     "Image.fromarray(r.integers(0,256,(160,105,4),dtype=np.uint8)).resize((10524,16000),0).save('big.png',"
     "compress_level=1)\" && /usr/bin/time -f 'peak RSS %M kB, %e s' xmr -q search run --image big.png -k 1 2>&1 "
     "| tail -1"),
    ("8", "non-UTF-8 byte in a JSONL manifest", "printf '{\"id\":\"a\",\"image\":\"data/img/red-circle-0.png\","
     f"\"texts\":[\"caf\\xe9\"]}}\\n' > u.jsonl && xmr encode u.jsonl {TOY}"),
    ("8", "non-UTF-8 byte in a CSV manifest", "printf 'id,image,texts\\na,data/img/red-circle-0.png,caf\\xe9\\n' > u.csv "
     f"&& xmr encode u.csv {TOY}"),
    ("8", "non-UTF-8 row with --skip-bad", "printf 'id,image,texts\\na,data/img/red-circle-0.png,caf\\xe9\\n"
     f"b,data/img/red-circle-1.png,ok\\n' > u.csv && xmr encode u.csv {TOY} --skip-bad"),
    ("9", "index into a read-only run folder", f"{MNT.format(d='ro', s='8M')} && cp -r run ro/ && "
     "mount -o remount,ro ro && xmr index ro/run --split test ;; umount -l ro"),
    ("9", "eval of a read-only run folder", f"{MNT.format(d='ro', s='8M')} && cp -r run ro/ && "
     "mount -o remount,ro ro && xmr eval ro/run ;; umount -l ro"),
    ("9", "train --out on a read-only filesystem", f"{MNT.format(d='ro', s='8M')} && mount -o remount,ro ro && "
     f"xmr train data/manifest.jsonl --out ro/new {T} ;; umount -l ro"),
    ("9", "encode into a read-only cache", f"{MNT.format(d='ro', s='8M')} && mount -o remount,ro ro && "
     f"xmr encode data/manifest.jsonl {TOY} --cache-dir ro/cache ;; umount -l ro"),
    ("10", "index onto a full disk", f"{MNT.format(d='sm', s='2M')} && {FILL.format(d='sm')} && "
     "xmr index run --split test --out sm/idx ;; ls -a sm | tr '\\n' ' '; umount -l sm"),
    ("10", "re-index over a good index on a full disk", f"{MNT.format(d='sm', s='2M')} && "
     f"xmr -q index run --split test --out sm/idx && {FILL.format(d='sm')} && sha1sum sm/idx/images/index.faiss && "
     "xmr index run --out sm/idx ;; sha1sum sm/idx/images/index.faiss; ls -a sm | tr '\\n' ' '; umount -l sm"),
    ("10", "train onto a full disk", f"{MNT.format(d='sm', s='1M')} && xmr train data/manifest.jsonl --out sm/r {T} ;; "
     "ls -a sm/r | tr '\\n' ' '; umount -l sm"),
    ("10", "encode onto a full disk", f"{MNT.format(d='sm', s='1M')} && {FILL.format(d='sm')} && "
     f"xmr encode data/manifest.jsonl {TOY} --cache-dir sm/c ;; umount -l sm"),
    ("11", "eval --texts-per-item 0", "xmr eval run --texts-per-item 0"),
    ("11", "index --texts-per-item -1", "xmr index run --texts-per-item -1"),
    ("11", "index --factory Bogus99", "xmr index run --factory Bogus99"),
    ("11", "train --out an existing file", f"echo x > f && xmr train data/manifest.jsonl --out f {T}"),
    ("11", "index . --out . (inside the run)", "cd run && xmr index . --out . ;; ls | tr '\\n' ' '"),
    ("12", "run.json with \"manifest\": 5", "python -c \"import json; c=json.load(open('run/run.json')); c['manifest']=5; "
     "json.dump(c, open('run/run.json','w'))\" && xmr eval run"),
    ("12", "run.json is a JSON list", "echo '[]' > run/run.json && xmr eval run"),
    ("12", "run.json names another text encoder than the checkpoint's",
     "python -c \"import json; c=json.load(open('run/run.json')); c['text_encoder']='minilm-l6'; "
     "json.dump(c, open('run/run.json','w'))\" && xmr search run --text x"),
    ("12", "gallery.sqlite shorter than the index, search -k 2000",
     "python -c \"import sqlite3; d=sqlite3.connect('run/index/gallery.sqlite'); d.execute('DELETE FROM items WHERE id >= 3'); "
     "d.commit()\" && xmr search run --text x -k 2000"),
    ("13", "kill -9 during index --rerank, then the next index run",
     "XMR_CRASH_AT=replaced:gallery.sqlite xmr -q index run --split test --rerank diffusion --rerank-param k=4 "
     "--rerank-param n_trunc=8; echo \"killed: exit $?; left: $(ls -a run | grep tmp- | wc -l) temp folder(s)\"; "
     "xmr -q index run --split test --rerank diffusion --rerank-param k=4 --rerank-param n_trunc=8; "
     "echo \"after the next run: $(ls -a run | grep tmp- | wc -l) temp folder(s)\""),
    ("14", "reader while another process merges the cache", "cd $OLDPWD && python -m pytest -q -p no:cacheprovider "
     "tests/test_hostile_inputs.py -k concurrent_merge 2>&1 | tail -1"),
    ("15", "index folder mode", "xmr -q index run --split test && stat -c 'index folder mode %a' run/index"),
    ("15", "unknown --loss lists instance", f"xmr train data/manifest.jsonl --out rl {T} --loss nope"),
]

MORE = [
    ("fs", "manifest is a folder", f"xmr encode data {TOY}"),
    ("fs", "manifest is a FIFO", f"mkfifo f.jsonl && timeout 60 xmr encode f.jsonl {TOY}"),
    ("fs", "manifest is empty", f": > e.jsonl && xmr encode e.jsonl {TOY}"),
    ("fs", "image is a symlink loop", "ln -s l.png l.png; printf '{\"id\":\"a\",\"image\":\"l.png\",\"texts\":[\"x\"]}\\n' "
     f"> l.jsonl && xmr encode l.jsonl {TOY}"),
    ("fs", "run folder is a file", "echo x > notrun && xmr eval notrun"),
    ("fs", "run without best/", "rm -r run/best && xmr eval run"),
    ("fs", "index.faiss truncated", "truncate -s 100 run/index/images/index.faiss && xmr search run --text x"),
    ("fs", "last.pt is garbage, same command", f"xmr -q train data/manifest.jsonl --out rg {T} && echo junk > rg/last.pt "
     f"&& xmr train data/manifest.jsonl --out rg {T}"),
    ("fs", "cache encoder.json corrupt", "echo '{' > cache/features/toy-image-d64-s0@32/encoder.json && "
     f"xmr encode data/manifest.jsonl {TOY}"),
    ("fs", "--cache-dir is a file", f"echo x > cf && xmr encode data/manifest.jsonl {TOY} --cache-dir cf"),
    ("fs", "gallery.sqlite is not a database", "echo '{\"a\":1}' > run/index/gallery.sqlite && xmr search run --text x"),
    ("fs", "index_run.json is a list, re-index", "echo '[]' > run/index/index_run.json && xmr index run --split test"),
    ("fs", "--out a symlink to the run's index", "ln -s run/index link && xmr index run --split test --out link"),
    ("fs", "--image is a folder", "xmr search run --image data"),
    ("fs", "--image is /dev/zero", "timeout 60 xmr search run --image /dev/zero"),
    ("fs", "model.json config edited (embed_dim 64)", "python -c \"import json; p='run/best/model.json'; m=json.load(open(p)); "
     "m['config']['embed_dim']=64; json.dump(m, open(p,'w'))\" && xmr search run --text x"),
    ("signal", "SIGTERM during an index build", "XMR_CRASH_AT=replaced:gallery.sqlite XMR_CRASH_SIGNAL=TERM "
     "xmr -q index run --split val; echo \"exit $?; temp folders left: $(ls -a run | grep tmp- | wc -l)\""),
    ("signal", "SIGTERM during training, then the same command",
     f"(xmr -q train data/manifest.jsonl --out rt {TOY} --embed-dim 32 --epochs 400 --batch-size 16 --patience 0 & "
     "p=$!; sleep 8; kill -TERM $p; wait $p; echo \"exit $?\"); "
     f"xmr -q train data/manifest.jsonl --out rt {TOY} --embed-dim 32 --epochs 400 --batch-size 16 --patience 0 "
     "| tail -1"),
    ("concurrency", "two trainings into one run folder (the first paused mid-run)",
     f"XMR_CRASH_AT=replaced:history.json XMR_CRASH_SIGNAL=STOP xmr -q train data/manifest.jsonl --out rc {T} > bg.log 2>&1 & "
     f"echo $! > bg.pid; sleep 6; xmr train data/manifest.jsonl --out rc {T} ;; kill -CONT $(cat bg.pid); sleep 3; "
     "cat rc/history.json "
     "| grep -c epoch"),
    ("concurrency", "two index builds of one index (the first paused mid-build)",
     "XMR_CRASH_AT=replaced:gallery.sqlite XMR_CRASH_SIGNAL=STOP xmr -q index run --split test > bg.log 2>&1 & "
     "echo $! > bg.pid; sleep 5; xmr index run --split val ;; kill -CONT $(cat bg.pid); sleep 3; ls -a run | tr '\\n' ' '"),
    ("concurrency", "two encodes into one fresh cache at once", f"(xmr -q encode data/manifest.jsonl {TOY} "
     f"--cache-dir c3 & xmr -q encode data/manifest.jsonl {TOY} --cache-dir c3; wait) && "
     f"xmr encode data/manifest.jsonl {TOY} --cache-dir c3 2>&1 | grep features:"),
    ("concurrency", "8 searches while the index is rebuilt 3 times", "(for i in 1 2 3; do xmr -q index run --split test; "
     "done) & ok=0; for i in 1 2 3 4 5 6 7 8; do xmr -q search run --text x -k 1 > /dev/null && ok=$((ok+1)); done; "
     "wait; echo \"searches ok: $ok/8\""),
    ("option", "--seed -1", f"xmr train data/manifest.jsonl --out rs {T} --seed -1"),
    ("option", "--epochs 0", f"xmr train data/manifest.jsonl --out rs {TOY} --epochs 0"),
    ("option", "--batch-size 1", f"xmr train data/manifest.jsonl --out rs {TOY} --batch-size 1"),
    ("option", "--embed-dim 0", f"xmr train data/manifest.jsonl --out rs {TOY} --embed-dim 0"),
    ("option", "--two-branch 1.5", f"xmr train data/manifest.jsonl --out rs {TOY} --two-branch 1.5"),
    ("option", "--sparse abc", f"xmr train data/manifest.jsonl --out rs {TOY} --sparse abc"),
    ("option", "--text-length 0 (textcnn)", "xmr train data/manifest.jsonl --out rs --image-encoder toy-image "
     "--text-encoder textcnn --word-vectors random --text-length 0"),
    ("option", "--train-split absent", f"xmr train data/manifest.jsonl --out rs {T} --train-split nope"),
    ("option", "manifest without a split field", "printf 'id,image,texts\\na,data/img/red-circle-0.png,x\\n' > n.csv && "
     f"xmr train n.csv --out rs {T}"),
    ("option", "--rerank bogus", "xmr index run --split test --rerank bogus"),
    ("option", "--rerank-param k=abc", "xmr index run --split test --rerank diffusion --rerank-param k=abc"),
    ("option", "-k 0", "xmr search run --text x -k 0"),
    ("option", "an empty query text", "xmr search run --text '   '"),
    ("option", "--max-image-pixels 1000 and a 32 x 32 query", "xmr --max-image-pixels 1000 search run "
     "--image data/img/red-circle-0.png"),
    ("option", "$XMR_MAX_IMAGE_PIXELS=abc", "XMR_MAX_IMAGE_PIXELS=abc xmr search run --image data/img/red-circle-0.png"),
    ("option", "eval --mode 5k", "xmr eval run --mode 5k"),
    ("option", "train --out below a file", f"echo x > f && xmr train data/manifest.jsonl --out f/sub {T}"),
]


# issue 25 (fast on a busy machine, nothing lost, nothing open), one list per part of the issue
ISSUE25_BUSY: list[tuple[str, str, str]] = []
ISSUE25_DATA: list[tuple[str, str, str]] = []
ISSUE25_SERVICE: list[tuple[str, str, str]] = []
ISSUE25_SMALL: list[tuple[str, str, str]] = []
ISSUE25_NEWCOMER: list[tuple[str, str, str]] = []

GROUPS = {"reported": REPORTED, "more": MORE, "issue25-busy": ISSUE25_BUSY, "issue25-data": ISSUE25_DATA,
          "issue25-service": ISSUE25_SERVICE, "issue25-small": ISSUE25_SMALL, "issue25-newcomer": ISSUE25_NEWCOMER}

def _shown_command(cmd: str) -> str:
    """The case's main command (its last ``xmr`` or helper call), for the table."""
    calls = re.findall(r"(?:XMR_\w+=\S+ )*(?:xmr|python kill2.py|python -m pytest) [^;&|()]*", cmd)
    shown = (calls[-1] if calls else cmd).strip().replace(T, "$T").replace(TOY, "$TOY")
    return shown.replace("|", "\\|").replace("`", "'")[:140]


def _run_case(cmd: str, cwd: Path, env: dict[str, str], timeout: float) -> tuple[int | None, str]:
    """Run ``cmd`` in bash in a new process group; afterwards kill that group (what the case left
    running, background jobs included), and only it. Returns (exit status or None on timeout, output)."""
    p = subprocess.Popen(["bash", "-c", cmd], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
        code: int | None = p.returncode
    except subprocess.TimeoutExpired:
        code, out = None, ""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if code is None:
        p.communicate()
    return code, out


def _message(out: str) -> str:
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("xmr: error:") or ": error: " in line]
    shown = " / ".join([*errors[-1:], *[x for x in lines[-2:] if x not in errors and not x.startswith(("INFO", "WARNING"))]])
    shown = shown or (lines[-1] if lines else "")
    if "Traceback" in out:
        shown = "TRACEBACK: " + shown
    return shown.replace("|", "\\|")[:400]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="write the markdown table here (default: print it only)")
    ap.add_argument("--groups", nargs="+", choices=sorted(GROUPS), default=list(GROUPS),
                    help="the case lists to run (default: all)")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="xmr-hostile-"))
    env = {**os.environ, "XMR_CACHE_DIR": str(base / "cache"), "XMR_NO_PROGRESS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.environ.get("PYTHONPATH", str(HERE.parent / "src"))}
    make_shapes_dataset(base / "work" / "data", copies=2)
    subprocess.run(f"cd {base / 'work'} && xmr -q train data/manifest.jsonl --out run {T} && xmr -q index run --split test",
                   shell=True, check=True, env=env)
    shutil.copytree(base / "cache", base / "cache0")
    rows = []
    for group in args.groups:
        for item, name, cmd in GROUPS[group]:
            shutil.rmtree(base / "case", ignore_errors=True)
            shutil.copytree(base / "work", base / "case", symlinks=True)
            shutil.rmtree(base / "cache", ignore_errors=True)
            shutil.copytree(base / "cache0", base / "cache")
            (base / "case" / "cache").symlink_to(base / "cache")
            for name_, text in HELPERS.items():
                (base / "case" / name_).write_text(text)
            first, _, after = cmd.partition(" ;; ")  # the exit status shown is the first part's
            code, out = _run_case(first, base / "case", {**env, "OLDPWD": str(HERE.parent)}, 300)
            status = "timeout" if code is None else str(code)
            if code is None:
                out = "no answer in 300 s"
            elif after:
                _, more = _run_case(after, base / "case", env, 120)
                out += "\n" + more
            rows.append((group, item, name, _shown_command(first), status, _message(out)))
            print(f"{item:>11} | {name} | {status} | {_message(out)}", flush=True)
    subprocess.run(["bash", "-c", f"mount | grep -F {base} | cut -d' ' -f3 | xargs -r -n1 umount -l"],
                   capture_output=True)
    shutil.rmtree(base, ignore_errors=True)
    lines = ["| # | item | case | command (after its set-up) | exit | what the user is told |", "|---|---|---|---|---|---|"]
    lines += [f"| {i} | {it} | {name} | `{cmd}` | {st} | {msg} |" for i, (_, it, name, cmd, st, msg) in enumerate(rows, 1)]
    text = ("Command: `python benchmarks/hostile_inputs.py` (as root, for the tmpfs cases). Each case runs in a copy of "
            "a folder holding a toy run (`run`, indexed on `test`) and its manifest (`data/manifest.jsonl`); the set-up of "
            f"each case is in the script. `$TOY` = `{TOY}`, `$T` = `$TOY {T[len(TOY) + 1:]}`.\n\n"
            + "\n".join(lines) + "\n")
    if args.out:
        Path(args.out).write_text(text)
        print(f"written: {args.out}")
    else:
        print(text)


if __name__ == "__main__":
    main()
