//! Hints for unknown fields: the allowed field a mistyped one most likely meant.

/// Words other tools use for a field, and the field portd calls it.
pub(super) const SYNONYMS: &[(&str, &str)] = &[
    ("target", "to"),
    ("dest", "to"),
    ("destination", "to"),
    ("toport", "to"),
    ("to_port", "to"),
    ("dport", "port"),
    ("public", "port"),
    ("listen_port", "port"),
    ("protocol", "proto"),
    ("src", "sources"),
    ("saddr", "sources"),
    ("allow", "sources"),
    ("iface", "interfaces"),
    ("iif", "interfaces"),
    ("iifname", "interfaces"),
    ("dev", "interfaces"),
    ("comment", "description"),
    ("desc", "description"),
    ("fwmark", "mark"),
    ("ipv6", "family"),
    ("ipv4", "family"),
    ("users", "user"),
    ("groups", "group"),
    ("quota", "max_forwards"),
    ("limit", "max_forwards"),
    ("targets", "to"),
    ("rules", "forwards"),
    ("forward", "forwards"),
    ("grant", "grants"),
    ("setting", "settings"),
];

/// The allowed field a mistyped `k` most likely meant: the same word in other case or
/// with `-` for `_`, a word other tools use for it, the nearest by edit distance (at most
/// 1 for fields of up to 3 letters, 2 for longer ones; the first in `allowed` on a tie),
/// or a field that starts with `k` (at least 3 letters) or that `k` starts with.
pub(super) fn suggest<'a>(allowed: &[&'a str], k: &str) -> Option<&'a str> {
    let norm = k.trim().to_ascii_lowercase().replace('-', "_");
    if let Some(a) = allowed.iter().find(|a| **a == norm) {
        return Some(a);
    }
    if let Some((_, f)) = SYNONYMS.iter().find(|(w, f)| *w == norm && allowed.contains(f)) {
        return allowed.iter().find(|a| *a == f).copied();
    }
    let best = allowed
        .iter()
        .map(|a| (distance(a, &norm), *a))
        .filter(|(d, a)| *d <= if a.len() <= 3 || norm.len() <= 3 { 1 } else { 2 })
        .min_by_key(|(d, _)| *d);
    if let Some((_, a)) = best {
        return Some(a);
    }
    allowed
        .iter()
        .find(|a| (norm.len() >= 3 && a.starts_with(&norm)) || (a.len() >= 3 && norm.starts_with(**a)))
        .copied()
}

/// Edit distance in which swapping two neighbouring letters (`prot` for `port`) is one
/// edit, like inserting, deleting or replacing one (optimal string alignment).
pub(super) fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    d[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}
