//! The packed store against the values it encodes.

use super::*;
use crate::model::{Family, Proto};

fn samples() -> Vec<Element> {
    let k = |f, p, port| vec![Value::NfProto(f), Value::InetProto(p), Value::InetService(port)];
    let mut v = Vec::new();
    for f in [Family::Ipv4, Family::Ipv6] {
        for p in [Proto::Tcp, Proto::Udp] {
            for port in [1, 80, 255, 256, 8080, 65535] {
                v.push(Element { key: k(f, p, port), data: None, comment: None });
                v.push(Element { key: k(f, p, port), data: Some(Value::InetService(port ^ 0x5a5a)), comment: None });
                v.push(Element { key: k(f, p, port), data: Some(Value::Mark(u32::from(port) << 16)), comment: None });
                for name in
                    ["", "a", "a\0", "a\0b", "ab", "c_user_root_p1025_0123abcd", "c_a_very_long_owner_name_indeed_1234"]
                {
                    v.push(Element { key: k(f, p, port), data: None, comment: Some(name.into()) });
                    let mut key = k(f, p, port);
                    key.push(Value::Ifname(name.into()));
                    v.push(Element { key, data: None, comment: None });
                }
                for (a, len) in [([10, 0, 0, 0], 8), ([10, 0, 0, 0], 16), ([192, 168, 1, 7], 32)] {
                    let key = vec![
                        Value::InetProto(p),
                        Value::InetService(port),
                        Value::Ipv4Net(Ipv4Net::new(a.into(), len).expect("net")),
                    ];
                    v.push(Element { key, data: None, comment: None });
                }
                let six = Ipv6Net::new("2001:db8::".parse().expect("addr"), 32).expect("net");
                v.push(Element { key: vec![Value::InetService(port), Value::Ipv6Net(six)], data: None, comment: None });
            }
        }
    }
    v
}

#[test]
fn round_trips_and_sorts_like_the_values() {
    let all = samples();
    for e in &all {
        assert_eq!(&decode(&encode(e)), e);
    }
    let by_value: BTreeSet<Element> = all.iter().cloned().collect();
    let packed: Elements = all.iter().cloned().collect();
    assert_eq!(packed.len(), by_value.len());
    assert!(packed.iter().eq(by_value.iter().cloned()), "same order as Element's Ord");
}

/// The value a borrowed field stands for.
fn owned(f: FieldRef<'_>) -> Value {
    match f {
        FieldRef::NfProto(x) => Value::NfProto(x),
        FieldRef::InetProto(x) => Value::InetProto(x),
        FieldRef::InetService(x) => Value::InetService(x),
        FieldRef::Mark(x) => Value::Mark(x),
        FieldRef::Ifname(b) => Value::Ifname(String::from_utf8(b.to_vec()).expect("utf-8")),
        FieldRef::Ipv4Net(a, l) => Value::Ipv4Net(Ipv4Net::new(a.into(), l).expect("net")),
        FieldRef::Ipv6Net(a, l) => Value::Ipv6Net(Ipv6Net::new(a.into(), l).expect("net")),
    }
}

#[test]
fn borrowed_parts_read_what_decode_reads() {
    let all = samples();
    let packed: Elements = all.iter().cloned().collect();
    let mut borrowed = 0;
    for (r, e) in packed.refs().zip(packed.iter()) {
        assert_eq!(r.decode(), e);
        let with_nul = e.comment.as_deref().is_some_and(|c| c.contains('\0'))
            || e.key.iter().any(|v| matches!(v, Value::Ifname(n) if n.contains('\0')));
        match r.parts() {
            None => assert!(with_nul, "only names with a NUL need decoding: {e:?}"),
            Some(p) => {
                borrowed += 1;
                let key: Vec<Value> = p.key.iter().flatten().map(|f| owned(*f)).collect();
                assert_eq!(key, e.key);
                assert_eq!(p.data.map(owned), e.data);
                assert_eq!(p.comment, e.comment.as_deref());
            }
        }
    }
    assert!(borrowed > all.len() / 2, "most samples are read in place: {borrowed}");
}

#[test]
fn finds_a_map_entry_by_key_and_takes_set_operations() {
    let all = samples();
    let packed: Elements = all.iter().cloned().collect();
    let key = vec![Value::NfProto(Family::Ipv6), Value::InetProto(Proto::Udp), Value::InetService(8080)];
    let first = packed.with_key(&key).expect("present");
    assert_eq!(first.key, key);
    assert_eq!(first.data, None, "no data sorts first");
    let missing = vec![Value::NfProto(Family::Ipv6), Value::InetProto(Proto::Udp), Value::InetService(8081)];
    assert_eq!(packed.with_key(&missing), None);
    let mut fewer = packed.clone();
    assert!(fewer.remove(&first));
    assert!(!fewer.contains(&first));
    assert_eq!(packed.difference(&fewer).collect::<Vec<_>>(), vec![first.clone()]);
    assert!(fewer.insert(first));
    assert_eq!(fewer, packed);
}

#[test]
fn packed_keys_are_the_keys_encoded() {
    let all = samples();
    let packed: Elements = all.iter().cloned().collect();
    let mut probe = Vec::new();
    for (r, e) in packed.refs().zip(packed.iter()) {
        key_bytes(&mut probe, &e.key);
        assert_eq!(r.key_bytes(), probe.as_slice(), "{e:?}");
        let first = packed.with_key_bytes(r.key_bytes()).expect("present");
        assert_eq!(first.decode().key, e.key);
        if e.data.is_none() {
            let again = PackedElement::keyed(r.key_bytes(), e.comment.as_deref());
            assert_eq!(again.as_ref(), r, "{e:?}");
        }
    }
}

#[test]
fn packed_set_operations() {
    let all: Elements = samples().into_iter().collect();
    let (mut odd, mut even) = (Elements::new(), Elements::new());
    for (i, r) in all.refs().enumerate() {
        let half = if i % 2 == 0 { &mut even } else { &mut odd };
        assert!(half.insert_ref(r));
    }
    assert_eq!(all.without(&odd), even);
    let mut both = odd.clone();
    both.insert_all(&even);
    assert_eq!(both, all);
    let (mut a, mut b) = (all.clone(), odd.clone());
    a.drop_common(&mut b);
    assert_eq!((&a, b.len()), (&even, 0));
    both.remove_all(&odd);
    assert_eq!(both, even);
    assert!(even.refs().all(|r| even.contains_ref(r) && !odd.contains_ref(r)));
    let mut kept = all.clone();
    kept.retain(|r| even.contains_ref(r));
    assert_eq!(kept, even);
}

#[test]
fn typical_elements_stay_inline() {
    let e = Element {
        key: vec![Value::NfProto(Family::Ipv4), Value::InetProto(Proto::Tcp), Value::InetService(1025)],
        data: Some(Value::InetService(8025)),
        // the comment `compile` gives an element of forward p1025 of user root
        comment: Some("user:root/p1025".into()),
    };
    assert!(matches!(encode(&e), Packed::Inline { .. }), "{:?}", encode(&e).bytes());
    assert_eq!(decode(&encode(&e)), e);
    assert!(std::mem::size_of::<Packed>() <= 40, "{}", std::mem::size_of::<Packed>());
}
