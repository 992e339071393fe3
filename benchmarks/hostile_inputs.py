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
HELPERS["svc.py"] = (HERE / "hostile_service.py").read_text()  # the service probes: python svc.py PROBE
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
ISSUE25_BUSY: list[tuple[str, str, str]] = [
    ("25.1", "how a training's idle OpenMP threads wait (libgomp's own report)",
     f"env -u OMP_WAIT_POLICY -u XMR_THREADS OMP_DISPLAY_ENV=VERBOSE xmr -q train data/manifest.jsonl --out rw {T} "
     "2>&1 | grep -E 'GOMP_SPINCOUNT' | sort | uniq -c | tr -s ' '"),
    ("25.1", "threads of the heads' training loop, and of the command",
     f"said=$(env -u XMR_THREADS xmr -v train data/manifest.jsonl --out rw {T} 2>&1 | grep -oE 'training on .*' "
     "| sort -u); echo \"${said:-(no line: the code does not say)}\""),
    ("25.1", "--threads 0", "xmr --threads 0 list"),
    ("25.1", "$XMR_THREADS=abc", "XMR_THREADS=abc xmr list"),
    ("25.1", "train --threads 1 after the command", f"xmr -q train data/manifest.jsonl --out rw {T} --threads 1 && "
     "echo trained"),
]
# the first indexed item's id, and data/more.jsonl: three train items (none in the index)
_FIRST = "id=$(python -c \"from xmr.search import Searcher; print(Searcher.from_run('run').items[0].id)\" 2>/dev/null)"
_MORE = "grep '\"split\": \"train\"' data/manifest.jsonl | head -3 > data/more.jsonl"
_INDEXED = ("python -c \"import json; d = json.load(open('run/index/index_run.json')); "
            "print(f'index_run.json: split {d[\\\"split\\\"]}, {d[\\\"n_images\\\"]} images, {len(d.get(\\\"edits\\\", []))} edit(s), '"
            "f'n_skipped {d.get(\\\"n_skipped\\\")}, command: {d[\\\"command\\\"]}')\"")
# hook/sitecustomize.py: in `xmr index add`, another process's full `xmr index run --split val` runs to its end
# just before the add takes the index lock
_RACE = """import subprocess
import xmr.workflows.index_edit as edit
real = edit.exclusive_lock
def lock(path, what):
    subprocess.run(["xmr", "-q", "index", "run", "--split", "val"], check=True)
    return real(path, what)
edit.exclusive_lock = lock
"""
_BY_ID = """from xmr.search import Searcher
from xmr.serve.service import Query, SearchService
svc, s = SearchService.load("run", "run/index"), Searcher.from_run("run")
items = [it for it in s.items if it is not None]
bad = 0
for it in items:
    got = [round(h["score"], 4) for h in svc.search(Query(image_id=it.id, k=5))[0]]
    bad += got != [round(h.score, 4) for h in s.search_image(it.image, 5)]
print(f"{bad} of {len(items)} items: search by image_id differs from a search by the item's own image")
"""
ISSUE25_DATA: list[tuple[str, str, str]] = [
    ("25.2.1", "search by image_id after index remove (service)",
     f"{_FIRST}; xmr -q index remove run $id && cat > byid.py <<'EOF'\n{_BY_ID}EOF\npython byid.py"),
    ("25.2.3", "index add racing a full index --split val",
     f"{_MORE} && mkdir hook && cat > hook/sitecustomize.py <<'EOF'\n{_RACE}EOF\n"
     f"PYTHONPATH=hook:$PYTHONPATH xmr -q index add run data/more.jsonl ;; {_INDEXED}"),
    ("25.2.4", "following the stale re-ranker's hint after an add",
     f"{_MORE} && xmr -q index run --split test --rerank diffusion --rerank-param k=4 --rerank-param n_trunc=8 && "
     "xmr -q index add run data/more.jsonl && xmr -q search run --text x --rerank diffusion 2>&1 "
     "| sed -n 's/.*`xmr \\(index [^`]*\\)`.*/\\1/p' > hint.txt; h=$(cat hint.txt); "
     f"xmr $h --rerank-param k=4 --rerank-param n_trunc=8 ;; echo \"the hint: xmr $(cat hint.txt)\"; {_INDEXED}"),
    ("25.2.4", "a plain rebuild of an index changed by add",
     f"{_MORE} && xmr -q index add run data/more.jsonl && xmr index run --split test ;; {_INDEXED}"),
    ("25.2.5", "index add --skip-bad with a missing image",
     "python add.py missing.png val && xmr index add run data/m.jsonl --split val --skip-bad ;; "
     f"echo \"skipped.jsonl: $(cat run/index/skipped.jsonl 2>/dev/null | wc -l) line(s)\"; {_INDEXED}"),
    ("25.2.6", "index remove with a run that does not exist",
     f"{_FIRST}; xmr index remove no-such-run $id --index run/index ;; {_INDEXED}"),
    ("25.2.6", "index remove with another model's run",
     f"{_FIRST}; xmr -q train data/manifest.jsonl --out r2 {T} --seed 7 --epochs 1 && "
     f"xmr index remove r2 $id --index run/index ;; {_INDEXED}"),
]
# the service (section 3, 2.2): each case starts `xmr serve run` on a free port and stops it by its PID (svc.py)
ISSUE25_SERVICE: list[tuple[str, str, str]] = [
    ("25.2.2", "texts filtered by a style their first item lacks", "python svc.py texts-filtered"),
    ("25.3.1", "a 15 MB JSON body, chunked", "python svc.py chunked-json"),
    ("25.3.1", "a 100 MB upload, chunked", "python svc.py chunked-upload"),
    ("25.3.2", "300,000 distinct filter values in one query", "python svc.py many-filter-values"),
    ("25.3.3", "3,000 requests to made-up paths, then /metrics", "python svc.py made-up-paths"),
    ("25.3.4", "an image symlink re-pointed at a secret after its first view", "python svc.py image-swapped"),
    ("25.3.4", "an image deleted after its first view", "python svc.py image-deleted"),
    ("25.3.5", "a Host header naming another site (DNS rebinding)", "python svc.py rebinding"),
    ("25.3.5", "a client that stalls in its body", "python svc.py slow-body"),
    ("25.3.5", "8 uploads of a 12000 x 12000 PNG at once", "python svc.py big-decodes"),
    ("25.3.8", "SIGTERM with two clients stalled in their bodies", "python svc.py sigterm-slow-clients"),
]
# 3.6, 3.7, 5.6: the API key, /docs and the page. `xmr serve run` on a free port ($P), in the background, stopped
# by its PID ($S); a serve that exits first shows its exit status and last line. The page's items run their
# chromium tests (tests/test_serve_browser.py) against the code surveyed.
_PORT = "P=$(python -c 'import socket; s = socket.socket(); s.bind((\"127.0.0.1\", 0)); print(s.getsockname()[1])')"


def _serving(serve: str, probe: str) -> str:
    """bash: ``serve`` (an ``xmr serve run ...``) on port $P; once /healthz answers, ``probe``, then stop it."""
    return (f"{_PORT}; >serve.log 2>&1 {serve} --port $P & S=$!; for i in $(seq 600); do "
            "curl -s -o /dev/null 127.0.0.1:$P/healthz && break; kill -0 $S 2>/dev/null || break; sleep 0.1; done; "
            f"if kill -0 $S 2>/dev/null; then {probe}; kill $S; wait $S; exit 0; "
            "else wait $S; rc=$?; tail -1 serve.log; exit $rc; fi")


_CODE = "curl -s -o /dev/null -w '%{http_code}'"
_PAGE_TEST = "python -m pytest -o addopts= -q -p no:cacheprovider $OLDPWD/tests/test_serve_browser.py -k"
ISSUE25_SERVICE += [
    ("25.3.6", "XMR_API_KEY with a trailing space",
     _serving("XMR_API_KEY=$'s3cret\\x20' xmr serve run",
              f"echo \"served; /info with X-API-Key 's3cret': $({_CODE} -H 'X-API-Key: s3cret' 127.0.0.1:$P/info), "
              f"with 's3cret ': $({_CODE} -H 'X-API-Key: s3cret ' 127.0.0.1:$P/info)\"")),
    ("25.3.6", "a CORS preflight with XMR_API_KEY set",
     _serving("XMR_API_KEY=s3cret xmr serve run --cors http://app.example",
              f"echo \"preflight of POST /search from http://app.example: $({_CODE} -X OPTIONS "
              "-H 'Origin: http://app.example' -H 'Access-Control-Request-Method: POST' "
              "-H 'Access-Control-Request-Headers: content-type,x-api-key' 127.0.0.1:$P/search), "
              "allow-origin: $(curl -s -D - -o /dev/null -X OPTIONS -H 'Origin: http://app.example' "
              "-H 'Access-Control-Request-Method: POST' 127.0.0.1:$P/search | grep -i '^access-control-allow-origin' "
              "| tr -d '\\r' | cut -d' ' -f2)\"")),
    ("25.3.6", "the page with XMR_API_KEY set: a key field?",
     _serving("XMR_API_KEY=s3cret xmr serve run",
              f"echo \"/: $({_CODE} 127.0.0.1:$P/), /info without the key: $({_CODE} 127.0.0.1:$P/info), "
              "key field in the page: $(curl -s 127.0.0.1:$P/ | grep -c 'id=\\\"api-key\\\"')\"")),
    ("25.3.6", "the page with a key, in chromium", f"{_PAGE_TEST} api_key"),
    ("25.3.7", "/docs offline: what it loads from elsewhere",
     _serving("xmr serve run", f"echo \"/docs: $({_CODE} 127.0.0.1:$P/docs), remote URLs: "
              "$(curl -s 127.0.0.1:$P/docs | grep -o 'https\\?://[^\\\"]*' | sort -u | tr '\\n' ' ')\"")),
    ("25.3.7", "/docs offline, in chromium", f"{_PAGE_TEST} docs_work_offline"),
    ("25.5.6", "GET /favicon.ico", _serving("xmr serve run", f"echo \"/favicon.ico: $({_CODE} 127.0.0.1:$P/favicon.ico)\"")),
    ("25.5.6", "search by this, then typed text: shown, one click to clear (chromium)", f"{_PAGE_TEST} search_by_this"),
    ("25.5.6", "a refused upload after a search (chromium)", f"{_PAGE_TEST} refused_upload"),
    ("25.5.6", "long ids without spaces (chromium)", f"{_PAGE_TEST} long_ids"),
    ("25.5.6", "'texts' offered by an index of images only (chromium)", f"{_PAGE_TEST} texts_are_not_offered"),
]
# as root, permissions do not stop reading: these xmr processes run without the two capabilities that bypass them
NODAC = "setpriv --bounding-set=-dac_override,-dac_read_search"
# a run with GXN's generative paths (caption decoder and text-to-image GAN), one epoch
GXN = (f"{TOY} --embed-dim 32 --hidden-dim 32 --two-branch 0.5 --similarity order --loss vse0 --margin 0.05 "
       "--batch-size 16 --patience 0 --epochs 1 --generative i2t,t2i --caption-xe-epochs 1")
ISSUE25_SMALL: list[tuple[str, str, str]] = [
    ("25.2.7", "unreadable sub-folder (data manifest --recursive)", "mkdir -p p/locked && cp data/img/red-circle-0.png "
     f"p/a.png && cp data/img/red-circle-1.png p/locked/b.png && chmod 000 p/locked && {NODAC} xmr data manifest p "
     "--out m.jsonl --recursive ;; chmod 755 p/locked; echo \"manifest: $(wc -l < m.jsonl) item(s); listed: "
     "$(cat m.skipped.jsonl 2>/dev/null || echo nothing)\""),
    ("25.2.7", "unreadable caption sidecar (data manifest)", "mkdir p && cp data/img/red-circle-0.png p/a.png && "
     "cp data/img/red-circle-1.png p/b.png && echo 'a red circle' > p/a.txt && echo 'a circle' > p/b.txt && "
     f"chmod 000 p/a.txt && {NODAC} xmr data manifest p --out m.jsonl ;; "
     "echo \"manifest: $(wc -l < m.jsonl) item(s); listed: $(cat m.skipped.jsonl 2>/dev/null || echo nothing)\""),
    ("25.2.7", "unreadable caption sidecar (index --images)", "mkdir p && cp data/img/red-circle-0.png p/a.png && "
     f"cp data/img/red-circle-1.png p/b.png && echo 'a red circle' > p/a.txt && chmod 000 p/a.txt && {NODAC} "
     "xmr index run --images p --out idx"),
    ("25.2.8", "data manifest --split inf/0/0", "mkdir p && cp data/img/red-circle-*.png p/ && "
     "xmr data manifest p --out m.jsonl --split inf/0/0"),
    ("25.2.8", "serve --max-upload-mb inf", "timeout 60 xmr serve run --max-upload-mb inf"),
    ("25.2.8", "train --margin inf", f"xmr train data/manifest.jsonl --out rm {T} --margin inf --loss vse0"),
    ("25.2.8", "index --memory-budget of 400 digits", f"xmr index run --factory auto --memory-budget {'9' * 400}GB"),
    ("25.2.9", "a FIFO as --queries", "mkfifo q.txt && timeout 60 xmr search run --queries q.txt"),
    ("25.2.9", "/dev/zero as --queries (ulimit -v 6 GB)", "ln -s /dev/zero q.txt && (ulimit -v 6000000; "
     "timeout 120 xmr search run --queries q.txt)"),
    ("25.2.9", "a FIFO as --captions", "mkdir p && cp data/img/red-circle-0.png p/ && mkfifo c.csv && "
     "timeout 60 xmr data manifest p --out m.jsonl --captions c.csv"),
    ("25.2.9", "a FIFO as the run's best/model.json", "rm run/best/model.json && mkfifo run/best/model.json && "
     "timeout 60 xmr eval run"),
    ("25.2.9", "a FIFO as a caption sidecar", "mkdir p && cp data/img/red-circle-0.png p/a.png && "
     "cp data/img/red-circle-1.png p/b.png && mkfifo p/a.txt && timeout 60 xmr data manifest p --out m.jsonl ;; "
     "echo \"listed: $(cat m.skipped.jsonl 2>/dev/null || echo nothing)\""),
    ("25.4", "caption --beam 1000 (vocabulary: tens of words)", f"xmr -q train data/manifest.jsonl --out rg {GXN} "
     "> /dev/null && xmr caption rg --image data/img/red-circle-0.png --beam 1000 > cap.txt ;; "
     "echo \"caption: '$(cat cap.txt)'\""),
    ("25.4", "imagine --n 12000 (ulimit -v 4 GB)", f"xmr -q train data/manifest.jsonl --out rg {GXN} > /dev/null && "
     "(ulimit -v 4000000; xmr -q imagine rg --text 'a red circle' --out im/x.png --n 12000 > /dev/null) ;; "
     "echo \"$(ls im 2>/dev/null | wc -l) PNGs written\""),
    ("25.4", "ESC and newline in file names (search, human output)", "mkdir p && "
     "cp data/img/red-circle-0.png \"p/$(printf 'red\\033[2Jx.png')\" && "
     "cp data/img/red-circle-1.png \"p/$(printf 'new\\nline.png')\" && xmr -q index run --images p --out idx && "
     "xmr search run --index idx --image data/img/red-circle-0.png -k 2 > out.txt ;; "
     "cat -v out.txt; echo \"$(wc -l < out.txt) lines for 2 hits; raw ESC bytes: $(tr -cd '\\033' < out.txt | wc -c)\""),
]
# section 5: the real encoders where the point is their memory or load time (each case trains a small run)
REAL = "--epochs 1 --batch-size 16 --patience 0"
ISSUE25_NEWCOMER: list[tuple[str, str, str]] = [
    ("25.5.1", "50 vs 400 image queries in one file (EfficientNet-Lite0): peak RSS",
     f"xmr -q train data/manifest.jsonl --out real --text-encoder toy-text {REAL} && xmr -q index real --split test "
     "&& for n in 50 400; do yes \"$(ls data/img/*.png)\" | head -n $n > q$n.txt; done && for n in 50 400; do "
     "/usr/bin/time -f \"$n image queries: peak RSS %M kB, %e s;\" xmr -q search real --queries q$n.txt --json "
     "2>&1 >/dev/null | tail -1; done | tr '\\n' ' '"),
    ("25.5.2", "the README's query file: an image path relative to another folder",
     "printf 'a purple circle\\nholidays/rex.jpg\\n' > queries.txt && xmr search run --queries queries.txt -k 2"),
    ("25.5.2", "a query line 'dog.png' that names no file, --json",
     "printf 'dog.png\\n' > q.txt && xmr search run --queries q.txt --json -k 1 ;; "
     "xmr search run --queries q.txt --json -k 1 2>/dev/null | cut -c1-150"),
    ("25.5.3", "train on a folder without captions",
     f"mkdir pics && cp data/img/*-0.png pics/ && xmr -q data manifest pics --out pics.jsonl --split 80/10/10 && "
     f"xmr train pics.jsonl --out rp {T}"),
    ("25.5.3", "the manifest of a folder without captions",
     "mkdir pics && cp data/img/*-0.png pics/ && xmr data manifest pics --out pics.jsonl --split 80/10/10 "
     "| tail -1 | cut -c1-200"),
    ("25.5.4", "one text query (MiniLM run): the log and the process time",
     "xmr -q train data/manifest.jsonl --out rm --image-encoder toy-image --text-encoder minilm-l6 --embed-dim 32 "
     f"{REAL} && xmr -q index rm --split test && /usr/bin/time -f 'process %e s' xmr search rm --text 'a red circle' "
     "-k 1 2>&1 | grep -E 'loaded the|process' | sed 's/INFO xmr[.a-z_]*: //' | tr '\\n' ' '"),
    ("25.5.5", "human output of a folder of bare images",
     "xmr -q index run --images data/img --out pidx && xmr search run --index pidx --text 'a red circle' -k 1"),
    ("25.5.5", "--target texts on an index of bare images",
     "xmr -q index run --images data/img --out pidx && xmr search run --index pidx --text 'a red circle' "
     "--target texts"),
]

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
