import os, time, sys
out = open(sys.argv[1], 'w')
me = os.getpid()
while True:
    t = time.time()
    for p in os.listdir('/proc'):
        if not p.isdigit(): continue
        try:
            cmd = open(f'/proc/{p}/cmdline','rb').read().replace(b'\0',b' ').decode('utf8','replace').strip()
            if not (cmd.startswith('postgres') or 'pgsieve' in cmd or 'valgrind' in cmd): continue
            st = open(f'/proc/{p}/stat').read()
            f = st[st.rindex(')')+2:].split()
            ut, stt = int(f[11]), int(f[12])
            ss=[0,0]
            for tk in os.listdir(f'/proc/{p}/task'):
                try:
                    x = open(f'/proc/{p}/task/{tk}/schedstat').read().split()
                    ss[0]+=int(x[0]); ss[1]+=int(x[1])
                except Exception: pass
            cs = {}
            for line in open(f'/proc/{p}/status'):
                if 'ctxt_switches' in line:
                    k, v = line.split(':'); cs[k] = int(v)
            out.write(f"{t:.3f}\t{p}\t{ut}\t{stt}\t{ss[0]}\t{ss[1]}\t{cs.get('voluntary_ctxt_switches',0)}\t{cs.get('nonvoluntary_ctxt_switches',0)}\t{cmd}\n")
        except Exception:
            pass
    out.flush()
    time.sleep(max(0, 0.1 - (time.time()-t)))
