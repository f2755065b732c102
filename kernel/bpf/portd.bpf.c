// SPDX-License-Identifier: MIT OR GPL-2.0
//
// portd's BPF data plane. One object, loaded once per portd instance (one
// network namespace); README.md beside this file describes the whole.
//
//   steer            sk_lookup, on the instance's netns: public port -> owner's socket
//   register         sockops, on the cgroup v2 root: listening sockets on target ports,
//                    and what the closed connections of steered ports received
//   bind4 / bind6    cgroup sock_addr, on the cgroup v2 root: reserved ports, watched ports
//   scan             iter/tcp, run by the loader: sockets that listened before the forward
//
// Every program ignores other network namespaces: the attach point does it for
// steer and scan, an explicit netns cookie comparison for the cgroup hooks.

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "portd.h"

#define AF_INET 2
#define AF_INET6 10
#define EACCES 13
#define TCP_CLOSE 7
#define TCP_LISTEN 10
#define LOOPBACK_IFINDEX 1

// Set by the loader before loading: the cookie of the namespace this instance
// serves. sk_lookup cannot call bpf_get_netns_cookie, so it is a constant.
volatile const __u64 netns_cookie = 0;

// Set by the loader: the highest uid of a system account (SYS_UID_MAX of
// /etc/login.defs). Only root and system accounts (services) may bind a user
// forward's public port besides its owner; the forward then stands back.
volatile const __u32 sys_uid_max = 999;

// Public port -> where to steer.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PORTD_MAX_PORTS);
	__type(key, __u32);
	__type(value, struct steer_val);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} steer SEC(".maps");

// Target port -> owner (or PORTD_ANY_UID); sockets listening there are registered.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PORTD_MAX_PORTS);
	__type(key, __u32);
	__type(value, struct target_val);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} targets SEC(".maps");

// The owners' listening sockets, PORTD_SLOTS per target port (members of a
// SO_REUSEPORT group, or v4 and v6 sockets), PORTD_MAX_LISTENERS in all. The
// kernel drops an entry when its socket closes.
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, PORTD_MAX_LISTENERS);
	__type(key, struct listener_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} listeners SEC(".maps");

// {protocol, port} -> the only uid allowed to bind it.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PORTD_MAX_PORTS);
	__type(key, struct port_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} reserved SEC(".maps");

// {protocol, port} -> uid whose forward uses it: a bind by anyone else is
// allowed but reported through `events`.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PORTD_MAX_PORTS);
	__type(key, struct port_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} watched SEC(".maps");

// {steered public port, family} -> what its closed connections received. The
// loader creates an entry when a port starts being steered and deletes it when
// the port stops; the programs only add to entries that exist.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2 * PORTD_MAX_PORTS);
	__type(key, struct count_key);
	__type(value, struct count_val);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} events SEC(".maps");

// The ports portd added to the namespace's ip_local_reserved_ports, one bit a
// port (written by the loader; no program reads it): kept in bpffs, which is
// emptied at boot as the sysctl is, so a restarted portd takes out only those.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536 / 32);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} local_ports SEC(".maps");

// Slot 0: the netns cookie the pinned set belongs to (written by the loader;
// no program reads it).
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} meta SEC(".maps");

// Is the connection made on this host? To 127.0.0.1 or ::1 it arrives on
// loopback; to one of the host's other addresses it carries the interface's
// index, but its source is that same address (the kernel's choice for a local
// destination; a client that binds another local source is not recognised).
static __always_inline int from_this_host(struct bpf_sk_lookup *ctx)
{
	if (ctx->ingress_ifindex == LOOPBACK_IFINDEX)
		return 1;
	if (ctx->family == AF_INET)
		return ctx->remote_ip4 == ctx->local_ip4;
	return ctx->remote_ip6[0] == ctx->local_ip6[0] && ctx->remote_ip6[1] == ctx->local_ip6[1] &&
	       ctx->remote_ip6[2] == ctx->local_ip6[2] && ctx->remote_ip6[3] == ctx->local_ip6[3];
}

// May `sk` take a connection to the packet's local address? A socket bound to
// a specific address (127.0.0.1) must only get connections to that address.
static __always_inline int address_fits(struct bpf_sk_lookup *ctx, struct bpf_sock *sk)
{
	if (ctx->family == AF_INET) {
		if (sk->family == AF_INET6) {
			// Only a wildcard (::) or v4-mapped (::ffff:a.b.c.d) v6 socket
			// can take IPv4 at all.
			if (sk->src_ip6[0] || sk->src_ip6[1])
				return 0;
			if (sk->src_ip6[2] && sk->src_ip6[2] != bpf_htonl(0xffff))
				return 0;
		}
		return sk->src_ip4 == 0 || sk->src_ip4 == ctx->local_ip4;
	}
	if (sk->family != AF_INET6)
		return 0;
	if (!(sk->src_ip6[0] | sk->src_ip6[1] | sk->src_ip6[2] | sk->src_ip6[3]))
		return 1;
	return sk->src_ip6[0] == ctx->local_ip6[0] && sk->src_ip6[1] == ctx->local_ip6[1] &&
	       sk->src_ip6[2] == ctx->local_ip6[2] && sk->src_ip6[3] == ctx->local_ip6[3];
}

// A TCP connection to a steered public port goes to the first of the owner's
// sockets on the target port that accepts it. With none, it is refused
// (SK_DROP: the lookup fails, the client gets a reset), never handed to
// whatever else holds the public port (a socket bound there before the forward,
// or while its owner's app was down). Connections the forward does not steer
// (a family it leaves out, this host's without `local`) take the normal lookup.
SEC("sk_lookup")
int steer_lookup(struct bpf_sk_lookup *ctx)
{
	if (ctx->protocol != IPPROTO_TCP)
		return SK_PASS;
	__u32 port = ctx->local_port;
	struct steer_val *sv = bpf_map_lookup_elem(&steer, &port);
	if (!sv)
		return SK_PASS;
	__u8 family = ctx->family == AF_INET ? PORTD_FAMILY_V4 : PORTD_FAMILY_V6;
	if (!(sv->families & family))
		return SK_PASS;
	if (!(sv->flags & PORTD_STEER_LOCAL) && from_this_host(ctx))
		return SK_PASS;

	struct listener_key key = {.port = sv->target_port};
	for (__u16 slot = 0; slot < PORTD_SLOTS; slot++) {
		key.slot = slot;
		struct bpf_sock *sk = bpf_map_lookup_elem(&listeners, &key);
		if (!sk)
			continue;
		// bpf_sk_assign refuses a family the socket cannot take (a v6-only
		// socket for IPv4, a v4 socket for IPv6): try the next slot then.
		int taken = address_fits(ctx, sk) && bpf_sk_assign(ctx, sk, 0) == 0;
		bpf_sk_release(sk);
		if (taken)
			return SK_PASS;
	}
	return SK_DROP;
}

static __always_inline void add_listener(struct bpf_sock_ops *skops, __u16 port)
{
	struct listener_key key = {.port = port};
	for (__u16 slot = 0; slot < PORTD_SLOTS; slot++) {
		key.slot = slot;
		if (bpf_sock_hash_update(skops, &listeners, &key, BPF_NOEXIST) == 0)
			return;
	}
}

// A socket that starts listening on a target port, in this namespace, by the
// target's owner (by anyone for a PORTD_ANY_UID target), is registered at once
// (an app restart is steered again as soon as it listens). The listen callback
// needs no bpf_sock_ops_cb_flags_set.
static __always_inline void on_listen(struct bpf_sock_ops *skops)
{
	__u32 port = skops->local_port;
	struct target_val *t = bpf_map_lookup_elem(&targets, &port);
	if (!t)
		return;
	// listen() runs in the owner's process: the current uid is the socket's.
	if (t->owner_uid != PORTD_ANY_UID && (__u32)bpf_get_current_uid_gid() != t->owner_uid)
		return;
	add_listener(skops, port);
}

// The family a connection's packets have: an IPv4 connection accepted by a
// dual-stack socket is AF_INET6 with a v4-mapped address (::ffff:a.b.c.d).
static __always_inline __u8 conn_family(struct bpf_sock_ops *skops)
{
	if (skops->family == AF_INET)
		return PORTD_FAMILY_V4;
	if (skops->local_ip6[0] == 0 && skops->local_ip6[1] == 0 && skops->local_ip6[2] == bpf_htonl(0xffff))
		return PORTD_FAMILY_V4;
	return PORTD_FAMILY_V6;
}

// Was the connection made on this host (the sockops view of from_this_host):
// to a loopback address, or from the address it was made to.
static __always_inline int conn_from_this_host(struct bpf_sock_ops *skops, __u8 family)
{
	if (family == PORTD_FAMILY_V4) {
		// (an IPv4 connection to a dual-stack socket has its addresses v4-mapped).
		// Every field is read at its own constant offset: the verifier refuses a
		// context access through a computed pointer.
		__u32 l4 = skops->local_ip4, r4 = skops->remote_ip4;
		__u32 l6 = skops->local_ip6[3], r6 = skops->remote_ip6[3];
		// (keeps clang from turning the choice below into a choice of field address)
		asm volatile("" : "+r"(l4), "+r"(r4), "+r"(l6), "+r"(r6));
		__u32 local = skops->family == AF_INET ? l4 : l6;
		__u32 remote = skops->family == AF_INET ? r4 : r6;
		return (bpf_ntohl(local) >> 24) == 127 || local == remote;
	}
	if (!skops->local_ip6[0] && !skops->local_ip6[1] && !skops->local_ip6[2] &&
	    skops->local_ip6[3] == bpf_htonl(1))
		return 1;
	return skops->remote_ip6[0] == skops->local_ip6[0] && skops->remote_ip6[1] == skops->local_ip6[1] &&
	       skops->remote_ip6[2] == skops->local_ip6[2] && skops->remote_ip6[3] == skops->local_ip6[3];
}

// Counting a steered connection costs nothing per packet: the socket counts
// what it receives anyway (segments, payload bytes), and when it closes its
// totals are added to its public port's entry in `counts`. The daemon adds the
// connections still open (sock_diag). A connection accepted on a steered
// public port, of a family the forward steers (and, made on this host, only
// for a `local` forward), asks for the state callback; no other does. (What
// the sk_lookup program did not steer went to whoever listens on the public
// port itself: not the forward's.)
static __always_inline void on_established(struct bpf_sock_ops *skops)
{
	__u32 port = skops->local_port;
	struct steer_val *sv = bpf_map_lookup_elem(&steer, &port);
	if (!sv)
		return;
	__u8 family = conn_family(skops);
	if (!(sv->families & family))
		return;
	if (!(sv->flags & PORTD_STEER_LOCAL) && conn_from_this_host(skops, family))
		return;
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

static __always_inline void on_state(struct bpf_sock_ops *skops)
{
	if (skops->args[1] != TCP_CLOSE)
		return;
	struct count_key key = {.port = (__u16)skops->local_port, .family = conn_family(skops)};
	struct count_val *c = bpf_map_lookup_elem(&counts, &key);
	if (!c)
		return;
	__sync_fetch_and_add(&c->packets, (__u64)skops->segs_in);
	__sync_fetch_and_add(&c->bytes, skops->bytes_received);
}

SEC("sockops")
int register_listener(struct bpf_sock_ops *skops)
{
	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_LISTEN_CB:
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_STATE_CB:
		break;
	default:
		return 1;
	}
	if (bpf_get_netns_cookie(skops) != netns_cookie)
		return 1;
	if (skops->op == BPF_SOCK_OPS_TCP_LISTEN_CB)
		on_listen(skops);
	else if (skops->op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		on_established(skops);
	else
		on_state(skops);
	return 1;
}

// Is `uid` an account that may not hold a user forward's public port (`owner`,
// its entry in `watched`, if any): neither its owner, root nor a system account?
static __always_inline int foreign_user(__u32 *owner, __u32 uid)
{
	return owner && *owner != uid && uid > sys_uid_max;
}

// Reserved port bound by another uid: EACCES. Root is no exception: a port
// reserved for a user's forward belongs to that user alone. A user forward's
// public port (watched) bound by an account that is neither its owner, root nor
// a system account: EACCES too (a public port of 1024 or more is open to every
// account's bind otherwise, and a bind there would push the forward aside). A
// watched port bound by root or a system account is reported by post_bind4/6,
// once the kernel's own checks let the bind through: this hook runs before them.
static __always_inline int check_bind(struct bpf_sock_addr *ctx)
{
	if (bpf_get_netns_cookie(ctx) != netns_cookie)
		return 1;
	__u16 port = bpf_ntohs(ctx->user_port);
	if (port == 0)
		return 1;
	struct port_key key = {.proto = ctx->protocol, .port = port};
	__u32 uid = (__u32)bpf_get_current_uid_gid();

	__u32 *owner = bpf_map_lookup_elem(&reserved, &key);
	if (owner && *owner != uid) {
		bpf_set_retval(-EACCES);
		return 0;
	}
	if (foreign_user(bpf_map_lookup_elem(&watched, &key), uid)) {
		bpf_set_retval(-EACCES);
		return 0;
	}
	return 1;
}

SEC("cgroup/bind4")
int bind4(struct bpf_sock_addr *ctx)
{
	return check_bind(ctx);
}

SEC("cgroup/bind6")
int bind6(struct bpf_sock_addr *ctx)
{
	return check_bind(ctx);
}

// A watched public port bound by root or a system account: reported. These
// hooks run after a bind has succeeded (privileged port, address in use and the
// bind hooks above all passed), so an attempt that failed reports nothing: only
// a socket that holds the port is evidence. A bind by another account that got
// here is one to port 0 the kernel gave a watched port (one in the ephemeral
// range; check_bind saw port 0): refused (EPERM), the port released.
static __always_inline int report_bind(struct bpf_sock *sk, __u8 family)
{
	if (bpf_get_netns_cookie(sk) != netns_cookie)
		return 1;
	struct port_key key = {.proto = (__u8)sk->protocol, .port = (__u16)sk->src_port};
	if (key.port == 0)
		return 1;
	__u32 uid = (__u32)bpf_get_current_uid_gid();
	__u32 *owner = bpf_map_lookup_elem(&watched, &key);
	if (foreign_user(owner, uid))
		return 0;
	if (owner && *owner != uid) {
		struct bind_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
		if (ev) {
			ev->uid = uid;
			ev->port = key.port;
			ev->proto = key.proto;
			ev->family = family;
			bpf_ringbuf_submit(ev, 0);
		}
	}
	return 1;
}

SEC("cgroup/post_bind4")
int post_bind4(struct bpf_sock *sk)
{
	return report_bind(sk, PORTD_FAMILY_V4);
}

SEC("cgroup/post_bind6")
int post_bind6(struct bpf_sock *sk)
{
	return report_bind(sk, PORTD_FAMILY_V6);
}

// --- iter/tcp: minimal kernel types, relocated by CO-RE against the running
// kernel's BTF (/sys/kernel/btf/vmlinux), so building needs no kernel BTF.

struct sock_common {
	union {
		struct {
			__be16 skc_dport;
			__u16 skc_num;
		};
	};
	unsigned short skc_family;
	volatile unsigned char skc_state;
} __attribute__((preserve_access_index));

struct bpf_iter_meta {
	void *seq;
} __attribute__((preserve_access_index));

struct bpf_iter__tcp {
	struct bpf_iter_meta *meta;
	struct sock_common *sk_common;
	__u32 uid;
} __attribute__((preserve_access_index));

// Walks the TCP sockets of the namespace of the process that runs it, and
// registers the owners' sockets (any socket for a PORTD_ANY_UID target)
// already listening on target ports that the loader just added (scan flag set), so an app started before its forward is
// steered too.
SEC("iter/tcp")
int scan_listeners(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	if (!skc || skc->skc_state != TCP_LISTEN)
		return 0;
	__u32 port = skc->skc_num;
	struct target_val *t = bpf_map_lookup_elem(&targets, &port);
	if (!t || !t->scan || (t->owner_uid != PORTD_ANY_UID && t->owner_uid != ctx->uid))
		return 0;
	struct listener_key key = {.port = port};
	for (__u16 slot = 0; slot < PORTD_SLOTS; slot++) {
		key.slot = slot;
		if (bpf_map_update_elem(&listeners, &key, skc, BPF_NOEXIST) == 0)
			break;
	}
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
