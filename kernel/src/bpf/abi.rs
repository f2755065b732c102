//! Map keys and values as the BPF programs lay them out (`kernel/bpf/portd.h`).

/// Sockets registered per target port (`PORTD_SLOTS`).
pub(crate) const SLOTS: u16 = 8;
/// Entries per port map (`PORTD_MAX_PORTS`).
pub(crate) const MAX_PORTS: usize = 65536;
/// `PORTD_ANY_UID`: a target any uid's socket may serve.
pub(crate) const ANY_UID: u32 = u32::MAX;

pub(crate) const FAMILY_V4: u8 = 1;
pub(crate) const FAMILY_V6: u8 = 2;
pub(crate) const STEER_LOCAL: u8 = 1;

pub(crate) const IPPROTO_TCP: u8 = 6;
pub(crate) const IPPROTO_UDP: u8 = 17;

/// `struct steer_val`: value of `steer`, keyed by the public port (u32).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SteerVal {
    pub target_port: u16,
    pub families: u8,
    pub flags: u8,
}

/// `struct target_val`: value of `targets`, keyed by the target port (u32).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TargetVal {
    pub owner_uid: u32,
    pub scan: u32,
}

/// `struct listener_key`: key of the `listeners` sockhash.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ListenerKey {
    pub port: u16,
    pub slot: u16,
}

/// `struct port_key`: key of `reserved` and `watched` (value: owner uid).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct PortKey {
    pub proto: u8,
    pub pad: u8,
    pub port: u16,
}

/// `struct count_key`: key of `counts`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct CountKey {
    pub port: u16,
    pub family: u8,
    pub pad: u8,
}

/// `struct count_val`: value of `counts`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CountVal {
    pub packets: u64,
    pub bytes: u64,
}

/// `struct bind_event`: a record of the `events` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawBindEvent {
    pub uid: u32,
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}

// SAFETY: each type is repr(C), made only of integers, with no padding bytes
// (every field is naturally aligned and the sizes add up to the struct size),
// so any byte pattern is a valid value and copying it to the kernel exposes no
// uninitialised memory.
unsafe impl aya::Pod for SteerVal {}
// SAFETY: as above (4 + 4 bytes, no padding).
unsafe impl aya::Pod for TargetVal {}
// SAFETY: as above (2 + 2 bytes, no padding).
unsafe impl aya::Pod for ListenerKey {}
// SAFETY: as above (1 + 1 + 2 bytes, the padding is an explicit field).
unsafe impl aya::Pod for PortKey {}

// SAFETY: as above (2 + 1 + 1 bytes, the padding is an explicit field).
unsafe impl aya::Pod for CountKey {}
// SAFETY: as above (8 + 8 bytes, no padding).
unsafe impl aya::Pod for CountVal {}

impl RawBindEvent {
    /// Decodes a ring buffer record; `None` for a record of another size.
    pub(crate) fn parse(bytes: &[u8]) -> Option<Self> {
        let b: &[u8; 8] = bytes.get(..8)?.try_into().ok()?;
        Some(Self {
            uid: u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            port: u16::from_ne_bytes([b[4], b[5]]),
            proto: b[6],
            family: b[7],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_c_header() {
        assert_eq!(size_of::<SteerVal>(), 4);
        assert_eq!(size_of::<TargetVal>(), 8);
        assert_eq!(size_of::<ListenerKey>(), 4);
        assert_eq!(size_of::<PortKey>(), 4);
        assert_eq!(size_of::<RawBindEvent>(), 8);
        assert_eq!(size_of::<CountKey>(), 4);
        assert_eq!(size_of::<CountVal>(), 16);
    }
}
