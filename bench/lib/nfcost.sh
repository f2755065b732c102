#!/bin/bash
# CPU time per request, in all and inside netfilter hooks, while wrk runs from a namespace:
#
#     bash bench/lib/nfcost.sh CLIENT-NS URL [SECONDS]      (as root; needs perf and wrk)
#
# wrk (-t1 -c32, one request per connection) runs SECONDS + 2 s; from its second second,
# `perf record -a -g -e cpu-clock` samples every CPU for SECONDS. Samples of wrk, nginx,
# ksoftirqd and the idle task's softirqs (not its halt) are the client's and server's
# work; those whose stack passes nf_hook_slow are netfilter's (nftables chains,
# conntrack, NAT). Divided by the requests made meanwhile: microseconds per request.
# Other processes (a busy machine's compilers) are left out, so the figures hold still
# far better than requests/s on a shared machine (bench/ANALYSIS.md).
set -eu
ns=$1 url=$2 secs=${3:-3} hz=2000
out=$(mktemp) data=$(mktemp)
trap 'rm -f "$out" "$data"' EXIT
ip netns exec "$ns" wrk -t1 -c32 -d$((secs + 2))s --timeout 2s -H 'Connection: close' "$url" >"$out" 2>&1 &
w=$!
sleep 1
perf record -q -a -g -F $hz -e cpu-clock -o "$data" -- sleep "$secs" 2>/dev/null
wait $w
rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
perf script -i "$data" -F comm,ip,sym 2>/dev/null | awk -v rps="${rps:-0}" -v secs="$secs" -v hz=$hz '
    function end() { if (ours) { n++; if (nf) nfn++ } ours = 0; nf = 0 }
    /^[^\t]/ && NF { end(); c = $1; ours = (c ~ /^(wrk|nginx|ksoftirqd)/ || c == "swapper"); next }
    /safe_halt|default_idle|cpuidle/ { if (c == "swapper") ours = 0 }
    /nf_hook_slow/ { nf = 1 }
    END { end(); r = rps * secs; if (!r) { print "no requests"; exit 1 }
          printf "%s req/s, %.2f us CPU per request, %.2f us in netfilter\n", rps, n / hz * 1e6 / r, nfn / hz * 1e6 / r }'
