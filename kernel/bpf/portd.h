// SPDX-License-Identifier: MIT OR GPL-2.0
//
// Map key and value layouts shared by the BPF programs and the loader
// (kernel/src/bpf/abi.rs mirrors them; keep both in step).
#ifndef PORTD_H
#define PORTD_H

#include <linux/types.h>

// Entries of each port map: every port there is. The hash maps are
// BPF_F_NO_PREALLOC, so an idle instance pays only for the bucket arrays.
#define PORTD_MAX_PORTS 65536
// Sockets registered per target port.
#define PORTD_SLOTS 8
// Sockets registered in all: two per target port (a v4 and a v6 socket, or two
// SO_REUSEPORT members) on every port; more slots of one port are allowed as
// long as the total stays below this.
#define PORTD_MAX_LISTENERS (2 * PORTD_MAX_PORTS)

// target_val.owner_uid: the target may be served by a socket of any uid (a
// system forward, from the root-written configuration). Never a reservation's
// or watched port's owner; (uid_t)-1 is no real uid.
#define PORTD_ANY_UID 0xffffffffu

#define PORTD_FAMILY_V4 1
#define PORTD_FAMILY_V6 2

// steer_val.flags: also steer connections that arrive on loopback.
#define PORTD_STEER_LOCAL 1

struct steer_val {
	__u16 target_port;
	__u8 families; // PORTD_FAMILY_* bits
	__u8 flags;    // PORTD_STEER_* bits
};

struct target_val {
	__u32 owner_uid;
	__u32 scan; // non-zero: the next iterator run registers sockets already listening
};

struct listener_key {
	__u16 port;
	__u16 slot;
};

struct port_key {
	__u8 proto; // IPPROTO_TCP or IPPROTO_UDP
	__u8 pad;
	__u16 port;
};

// Key of `counts`: a steered public port and the family of its connections
// (PORTD_FAMILY_*; an IPv4 connection to a dual-stack socket is PORTD_FAMILY_V4).
struct count_key {
	__u16 port;
	__u8 family;
	__u8 pad;
};

// Value of `counts`: what the closed connections of a steered public port
// received (TCP segments, payload bytes).
struct count_val {
	__u64 packets;
	__u64 bytes;
};

struct bind_event {
	__u32 uid;
	__u16 port;
	__u8 proto;
	__u8 family; // PORTD_FAMILY_*
};

#endif
