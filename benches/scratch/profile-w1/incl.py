import sys, re, collections
pats = sys.argv[2:]
tot=0; c=collections.Counter()
for line in open(sys.argv[1]):
    stack, n = line.rstrip().rsplit(' ',1); n=int(n); tot+=n
    for p in pats:
        if re.search(p, stack): c[p]+=n
for p in pats: print(f"| {100*c[p]/tot:5.1f} % | `{p}` |")
