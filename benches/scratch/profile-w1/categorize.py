import sys, re, collections
cats = [
 ("follower apply: SQL/statement building (Sink::on_change/flush_batch/wire)", r"pgsieve::sink::apply::|pgsieve::sink::statements|pgsieve::sink::value|WireValue"),
 ("follower apply: pipeline + tokio-postgres encode/send/recv", r"pgsieve::sink::pipeline|tokio_postgres::|postgres_protocol::"),
 ("filter (FilterStage, set masks, model)", r"pgsieve::filter::|pgsieve_filters::"),
 ("decode (pgoutput parse, assembler)", r"pgsieve_protocol::pgoutput|LogicalMessage::parse|PgOutputDecoder|pgsieve::txn::"),
 ("source: replication frames, CopyData read", r"pgsieve::source::|ReplicationMessage|pgsieve_protocol::replication|split_frame"),
 ("fan-out / channel (mpsc send/recv, Fanout)", r"pgsieve::fanout::|tokio::sync::mpsc|pgsieve::run::forward|run_sink"),
 ("feedback / status / metrics", r"pgsieve::feedback|pgsieve::metrics|metrics::|pgsieve::status"),
 ("reader loop (run_session select!, watch)", r"pgsieve::run::run_session|tokio::sync::watch"),
 ("tokio runtime / scheduler / park", r"tokio::runtime|tokio::park|parking_lot"),
]
tot = 0; out = collections.Counter(); kern = collections.Counter()
for line in open(sys.argv[1]):
    stack, n = line.rstrip().rsplit(' ', 1); n = int(n); tot += n
    frames = stack.split(';')
    c = None
    for f in reversed(frames):
        for name, pat in cats:
            if re.search(pat, f): c = name; break
        if c: break
    out[c or "other (libc, kernel entry, process start)"] += n
    if frames[-1].endswith('_[k]'): kern[c or 'other'] += n
for c, n in out.most_common():
    print(f"{100*n/tot:5.1f}%  (kernel {100*kern[c]/tot:4.1f}%)  {c}")
print(f"total samples ns {tot}")
