# The harness bench/layouts and bench/layouts-nat share, sourced after they set ROOT, W
# (their work directory), S and C (namespace names), SRV_IP and CLI_IP. Each defines
# `prepare` (run once the namespaces and nginx are up: load what its layout needs
# besides its nftables file, or nothing) and `finish` (undo it), then calls
# `layouts_run ROUNDS LAYOUT...`: per round, every layout in rotating order in fresh
# namespaces, the layout's table $W/LAYOUT.nft loaded (none for a layout named `prog`),
# CPU µs per connection inside netfilter (bench/lib/nfcost.sh; KA=1: keep-alive
# requests/s instead) from the client namespace (remote) and from the server's (local).
# NGINX holds nginx's pid once it runs (the callers' EXIT traps kill it).

layouts_up() {
    ip netns add $S; ip netns add $C; ip -n $S link set lo up; ip -n $C link set lo up
    ip link add vsrv netns $S type veth peer name vcli netns $C
    ip -n $S addr add $SRV_IP/24 dev vsrv; ip -n $C addr add $CLI_IP/24 dev vcli
    ip -n $S link set vsrv up; ip -n $C link set vcli up
    for ns in $S $C; do ip netns exec $ns sysctl -qw net.ipv4.ip_local_port_range="1024 65535" net.ipv4.tcp_tw_reuse=1 net.core.somaxconn=4096; done
    mkdir -p "$W/ng"
    cat >"$W/ng/nginx.conf" <<CONF
worker_processes 1; pid $W/ng/nginx.pid; error_log $W/ng/error.log warn;
events { worker_connections 8192; }
http { access_log off; client_body_temp_path $W/ng/tb; proxy_temp_path $W/ng/tp; fastcgi_temp_path $W/ng/tf; uwsgi_temp_path $W/ng/tu; scgi_temp_path $W/ng/ts;
 server { listen 8080 backlog=4096; location / { return 200 "ok\n"; } } }
CONF
    ip netns exec $S nginx -p "$W/ng" -c "$W/ng/nginx.conf" -g 'daemon off;' </dev/null >/dev/null 2>&1 &
    NGINX=$!
    sleep 0.3
    prepare
}

layouts_down() {
    kill $NGINX 2>/dev/null; wait $NGINX 2>/dev/null
    finish
    ip netns del $S; ip netns del $C
}

layouts_run() {
    local rounds=$1 r i n v place ns res
    shift
    local layouts="$*"
    printf 'round\tlayout\tclient\tresult\n'
    for r in $(seq "$rounds"); do
        set -- $layouts; n=$#
        for i in $(seq 0 $((n - 1))); do
            eval "v=\${$(( (i + r - 1) % n + 1 ))}"
            layouts_up
            [ "$v" = prog ] || ip netns exec $S nft -f "$W/$v.nft" || { echo "loading $v failed" >&2; exit 1; }
            [ "$(ip netns exec $C curl -s -m1 http://$SRV_IP/)" = ok ] || { echo "$v: no answer on port 80" >&2; exit 1; }
            for place in remote local; do
                ns=$C; [ $place = local ] && ns=$S
                if [ -n "${KA:-}" ]; then
                    res="$(ip netns exec $ns wrk -t1 -c32 -d4s http://$SRV_IP/ 2>&1 | awk '/Requests.sec/ { print $2 }') keep-alive req/s"
                else
                    res=$(bash "$ROOT/bench/lib/nfcost.sh" $ns http://$SRV_IP/ 3 2>&1)
                fi
                printf '%s\t%s\t%s\t%s\n' "$r" "$v" "$place" "$res"
            done
            layouts_down
        done
    done
}
