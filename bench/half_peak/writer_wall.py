import collections, re, sys
c = collections.Counter(); tot = 0
for line in open(sys.argv[1]):
    stack, n = line.rstrip().rsplit(" ", 1); n = int(n)
    if "LedgerWriter._run" not in stack: continue
    frames = stack.split(";")
    if any("get (queue.py" in f for f in frames) : c["(waiting for intents)"] += n; tot += n; continue
    tot += n
    g = [f for f in frames if "gateway/" in f]
    c[(re.sub(r":\d+\)", ")", g[-1]) if g else "?", re.sub(r":\d+\)", ")", frames[-1]))] += n
print("writer samples", tot)
for k, v in c.most_common(int(sys.argv[2]) if len(sys.argv) > 2 else 30): print(f"{100*v/tot:5.1f}% {v:6d} {k}")
