#!/bin/bash
D=/tmp/w1prof
cfg="$3"
key=$(echo "$cfg" | md5sum | cut -c1-8)
n=$(( $(cat $D/count.$key 2>/dev/null || echo 0) + 1 )); echo $n > $D/count.$key
echo "$(date +%s.%N) start pid=$$ n=$n cfg=$cfg" >> $D/wrap.log
if [ $n -eq 2 ]; then
  tag=r2-$(date +%H%M%S)-$$
  cp "$cfg" $D/$tag.toml
  LP=$(grep -m1 '^url' "$cfg" | sed 's/.*:\([0-9]*\)\/.*/\1/')
  FP=$(grep '^url' "$cfg" | tail -1 | sed 's/.*:\([0-9]*\)\/.*/\1/')
  perf record -F 1999 -g --call-graph dwarf,16384 -p $$ -o $D/$tag.pgsieve.data 2>$D/$tag.perf.err &
  ( sleep 1.5
    ss -tnpH state established "( sport = :$FP )" > $D/$tag.ss-follower
    ss -tnpH state established "( sport = :$LP )" > $D/$tag.ss-leader
    fpids=$(grep -o 'pid=[0-9]*' $D/$tag.ss-follower | cut -d= -f2 | sort -u | paste -sd,)
    for p in $(grep -o 'pid=[0-9]*' $D/$tag.ss-leader | cut -d= -f2 | sort -u); do grep -q walsender /proc/$p/cmdline 2>/dev/null && wpid=$p; done
    echo "follower=$fpids walsender=$wpid" > $D/$tag.pids
    perf record -F 1999 -g --call-graph dwarf,16384 -p $fpids -o $D/$tag.follower.data 2>$D/$tag.fperf.err &
    perf record -F 1999 -g --call-graph dwarf,16384 -p $wpid -o $D/$tag.walsender.data 2>$D/$tag.wperf.err &
    while kill -0 $$ 2>/dev/null; do sleep 0.2; done
    sleep 0.5; kill -INT $(jobs -p) 2>/dev/null
  ) &
  ( while kill -0 $$ 2>/dev/null; do l=$(readlink /proc/$$/fd/2); sleep 0.2; [ -f "$l" ] && cp "$l" $D/$tag.log 2>/dev/null; done; echo "$(date +%s.%N) exit pid=$$" >> $D/wrap.log ) &
  sleep 0.4
fi
exec /work/target-profile/release/pgsieve "$@"
