import sys, collections
fn, t0, t1 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
first, last = {}, {}
for line in open(fn):
    f = line.rstrip('\n').split('\t')
    t = float(f[0])
    if t < t0 or t > t1: continue
    pid = f[1]
    rec = (t, int(f[2]) + int(f[3]), int(f[4]), int(f[5]), int(f[6]), int(f[7]), f[8])
    first.setdefault(pid, rec); last[pid] = rec
rows = []
for pid, a in first.items():
    b = last[pid]
    dt = b[0] - a[0]
    if dt <= 0: continue
    cpu = (b[1]-a[1]) / 100.0
    run = (b[2]-a[2]) / 1e9
    wait = (b[3]-a[3]) / 1e9
    rows.append((run, pid, dt, cpu, wait, b[4]-a[4], b[5]-a[5], b[6][:90]))
rows.sort(reverse=True)
print(f"window {t1-t0:.2f}s")
print(f"{'pid':>7} {'span':>6} {'cpu_s':>6} {'run_s':>6} {'util%':>6} {'rq_wait_s':>9} {'vol_cs':>8} {'invol':>6}  title")
for run, pid, dt, cpu, wait, vcs, ics, title in rows[:int(sys.argv[4]) if len(sys.argv)>4 else 15]:
    print(f"{pid:>7} {dt:6.2f} {cpu:6.2f} {run:6.2f} {100*run/dt:6.1f} {wait:9.2f} {vcs:8d} {ics:6d}  {title}")
