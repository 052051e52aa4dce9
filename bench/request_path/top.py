import sys, re, collections
path = sys.argv[1]; n = int(sys.argv[2]) if len(sys.argv) > 2 else 30
selfc = collections.Counter(); incl = collections.Counter(); total = 0; threads = collections.Counter()
cats = collections.Counter()
CATS = [  # first match wins (checked against the stack, innermost first is not needed)
 ("writer thread (decide, write, commit)", "LedgerWriter._run"),
 ("db thread (reads)", "_threadworker.py:76"),
 ("reactor: handing work to the db thread", "deferToThreadPool"),
 ("audit", "serve/audit.py"),
 ("card read (driver/relay)", "gateway/reader/"),
 ("settle handlers", "serve/handlers.py"),
 ("session", "protocol/session.py"),
 ("dispatch", "serve/dispatch.py"),
 ("adapter", "serve/adapter.py"),
]
for line in open(path):
    line = line.rstrip("\n")
    if not line: continue
    stack, count = line.rsplit(" ", 1); count = int(count)
    frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
    total += count
    selfc[frames[-1]] += count
    for f in set(frames): incl[f] += count
    for name, marker in CATS:
        if marker in stack: cats[name] += count; break
    else: cats["other (reactor: sockets, Twisted)"] += count
print(f"total samples {total}")
print("-- categories")
for k, v in cats.most_common(): print(f"{100*v/total:5.1f}%  {k}")
print("-- self")
for k, v in selfc.most_common(n): print(f"{100*v/total:5.1f}%  {k}")
print("-- inclusive")
for k, v in incl.most_common(n+30): print(f"{100*v/total:5.1f}%  {k}")
