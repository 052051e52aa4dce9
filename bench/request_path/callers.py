import sys, re, collections
path, target = sys.argv[1], sys.argv[2]; depth = int(sys.argv[3]) if len(sys.argv) > 3 else 1
c = collections.Counter(); total = 0
for line in open(path):
    stack, count = line.rstrip("\n").rsplit(" ", 1); count = int(count); total += count
    frames = stack.split(";")
    for i, f in enumerate(frames):
        if target in f:
            c[" < ".join(re.sub(r" \(.*/", " (", x) for x in frames[max(0, i - depth):i + 1][::-1])] += count; break
for k, v in c.most_common(15): print(f"{100*v/total:5.1f}%  {k}")
