//! `net.ipv4.ip_local_reserved_ports`: keeping the kernel's automatic port
//! selection (bind to port 0, UDP's implicit bind) off the reserved targets.
//! The bind hooks never see the port such a bind finally gets; this sysctl,
//! per network namespace and covering IPv6 too, does.
#![forbid(unsafe_code)]

use std::{
    collections::BTreeSet,
    fs::{File, OpenOptions},
    io::{self, Read, Write},
};

const PATH: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";

/// The kernel parses at most a page less one byte per write(2); each further
/// write of the same open file adds to the first (ORs the bitmaps).
const CHUNK: usize = 4000;

/// Rewrites `ip_local_reserved_ports` of the calling thread's network
/// namespace to (current − `added_before`) ∪ `ours_now`: the ports this
/// process added last time are taken out, today's put in, and everything
/// else the operator listed (single ports and ranges) stays. Returns the ports
/// of `ours_now` this process added, the `added_before` of the next call: a
/// port the operator had listed already is not added, so it stays when ours
/// goes. (A port the operator lists after portd added it goes with ours: the
/// sysctl keeps no owner.) Writes nothing when the value would not change.
pub fn reserve_local_ports(added_before: &BTreeSet<u16>, ours_now: &BTreeSet<u16>) -> io::Result<BTreeSet<u16>> {
    let current = read_reserved_ports()?;
    let (merged, added) = merge_reserved(&current, added_before, ours_now)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{PATH}: {e}")))?;
    if format_ports(&parse_ports(&current).expect("parsed just above")) == merged {
        return Ok(added);
    }
    let mut file = OpenOptions::new().write(true).open(PATH)?;
    for chunk in chunks(&merged) {
        // One write(2) per chunk: the first replaces the bitmap, the others
        // add to it.
        let n = file.write(chunk.as_bytes())?;
        if n != chunk.len() {
            return Err(io::Error::other(format!("{PATH}: short write ({n} of {} bytes)", chunk.len())));
        }
    }
    Ok(added)
}

/// The sysctl's value. It must come from one read(2): the kernel answers a
/// read at a non-zero offset with nothing, so a reader that starts with a
/// small buffer (`read_to_string`) would see only the value's first bytes.
pub fn read_reserved_ports() -> io::Result<String> {
    // Longest value: 21,845 ranges like "65533-65534," (about 262 KB).
    let mut buf = vec![0u8; 1 << 20];
    let n = File::open(PATH)?.read(&mut buf)?;
    if n == buf.len() {
        return Err(io::Error::other(format!("{PATH}: value longer than {} bytes", buf.len())));
    }
    buf.truncate(n);
    String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{PATH}: {e}")))
}

/// (ports of `current` − `before`) ∪ `now`, as the kernel's own compact
/// notation (`1000,8080-8090`; an empty set is `""`), and the ports of `now`
/// that the operator's part (`current` − `before`) lacks.
pub(crate) fn merge_reserved(
    current: &str,
    before: &BTreeSet<u16>,
    now: &BTreeSet<u16>,
) -> Result<(String, BTreeSet<u16>), String> {
    let mut bits = parse_ports(current)?;
    for &p in before {
        bits[p as usize] = false;
    }
    let added = now.iter().copied().filter(|p| !bits[*p as usize]).collect();
    for &p in now {
        bits[p as usize] = true;
    }
    Ok((format_ports(&bits), added))
}

/// A port bitmap from `a,b-c,...` (spaces, tabs and newlines allowed around).
fn parse_ports(s: &str) -> Result<Vec<bool>, String> {
    let mut bits = vec![false; 1 << 16];
    for item in s.split([',', '\n']).map(str::trim).filter(|i| !i.is_empty()) {
        let port = |t: &str| t.trim().parse::<u16>().map_err(|_| format!("not a port or range: {item:?}"));
        let (lo, hi) = match item.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(item)?, port(item)?),
        };
        if lo > hi {
            return Err(format!("empty range {item:?}"));
        }
        bits[lo as usize..=hi as usize].fill(true);
    }
    Ok(bits)
}

/// Runs of set bits as `a` or `a-b`, comma separated, ascending.
fn format_ports(bits: &[bool]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bits.len() {
        if !bits[i] {
            i += 1;
            continue;
        }
        let start = i;
        while i + 1 < bits.len() && bits[i + 1] {
            i += 1;
        }
        out.push(if start == i { start.to_string() } else { format!("{start}-{i}") });
        i += 1;
    }
    out.join(",")
}

/// `value` cut at commas into pieces of at most [`CHUNK`] bytes, each ended
/// by a newline (an empty value is one "\n": the kernel then clears the set;
/// a write of nothing would change nothing).
fn chunks(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for item in value.split(',').filter(|i| !i.is_empty()) {
        if !cur.is_empty() && cur.len() + 1 + item.len() + 1 > CHUNK {
            out.push(std::mem::take(&mut cur) + "\n");
        }
        if !cur.is_empty() {
            cur.push(',');
        }
        cur.push_str(item);
    }
    out.push(cur + "\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ports: &[u16]) -> BTreeSet<u16> {
        ports.iter().copied().collect()
    }

    /// The merged value alone.
    fn merged(current: &str, before: &BTreeSet<u16>, now: &BTreeSet<u16>) -> Result<String, String> {
        merge_reserved(current, before, now).map(|(v, _)| v)
    }

    #[test]
    fn a_port_the_operator_listed_is_not_ours_and_stays() {
        // The operator reserved 40000-40010; a forward's target 40005 comes and goes.
        let (value, added) = merge_reserved("40000-40010\n", &set(&[]), &set(&[40005, 8080])).expect("merge");
        assert_eq!((value.as_str(), added), ("8080,40000-40010", set(&[8080])));
        let (value, added) = merge_reserved(&value, &set(&[8080]), &set(&[])).expect("merge");
        assert_eq!((value.as_str(), added), ("40000-40010", set(&[])));
        // Ours kept from one call to the next stays ours.
        let (_, added) = merge_reserved("8080", &set(&[8080]), &set(&[8080])).expect("merge");
        assert_eq!(added, set(&[8080]));
    }

    #[test]
    fn keeps_the_operators_entries_and_swaps_ours() {
        // The operator's 1000 and 8000-8010 stay; our old 9000 goes, 9001 and 9002 come.
        let merged = merged("1000,8000-8010,9000\n", &set(&[9000]), &set(&[9001, 9002]));
        assert_eq!(merged.as_deref(), Ok("1000,8000-8010,9001-9002"));
    }

    #[test]
    fn writes_compact_ranges_and_joins_neighbours() {
        let now = set(&[5, 6, 7, 9, 11, 12, 65535]);
        assert_eq!(merged("", &set(&[]), &now).as_deref(), Ok("5-7,9,11-12,65535"));
        // Ours next to the operator's range: one range.
        assert_eq!(merged("10-20", &set(&[]), &set(&[21, 9])).as_deref(), Ok("9-21"));
        assert_eq!(merged("0", &set(&[]), &set(&[1])).as_deref(), Ok("0-1"));
    }

    #[test]
    fn removing_ours_may_split_a_range_and_can_empty_the_set() {
        assert_eq!(merged("100-110", &set(&[105]), &set(&[])).as_deref(), Ok("100-104,106-110"));
        assert_eq!(merged("8080\n", &set(&[8080]), &set(&[])).as_deref(), Ok(""));
        // A port both before and now stays.
        assert_eq!(merged("", &set(&[80]), &set(&[80])).as_deref(), Ok("80"));
    }

    #[test]
    fn accepts_the_kernels_notation_and_refuses_garbage() {
        assert_eq!(merged(" 1, 2 ,3-4\n", &set(&[]), &set(&[])).as_deref(), Ok("1-4"));
        assert!(merged("1,x", &set(&[]), &set(&[])).is_err());
        assert!(merged("9-3", &set(&[]), &set(&[])).is_err());
        assert!(merged("70000", &set(&[]), &set(&[])).is_err());
    }

    #[test]
    fn long_values_are_cut_at_commas_below_a_page() {
        let every_other: Vec<u16> = (1..=65535).step_by(2).collect();
        let value = merged("", &set(&[]), &set(&every_other)).expect("merge");
        let parts = chunks(&value);
        assert!(parts.len() > 1);
        assert!(parts.iter().all(|c| c.len() <= CHUNK && c.ends_with('\n') && !c.starts_with(',')));
        assert_eq!(parts.concat().trim_end_matches('\n').replace('\n', ","), value);
        assert_eq!(chunks(""), ["\n"]);
    }
}
