//! The daemon config's own parts: `settings` and `grants`.

use super::ctx::{check_keys, clip, describe, get_bool, get_list, get_ports, get_str, get_u32, Ctx};
use super::tree::Node;
use crate::model::*;
use ipnet::IpNet;
use std::borrow::Cow;
use std::net::IpAddr;

pub(super) const SETTINGS_FIELDS: &[&str] =
    &["table", "mark", "on_exit", "socket", "state_dir", "listener_check", "dispatch", "ownership", "metrics"];
pub(super) const SOCKET_FIELDS: &[&str] = &["path", "group", "mode"];
pub(super) const METRICS_FIELDS: &[&str] = &["listen", "allow"];
pub(super) const GRANT_FIELDS: &[&str] = &[
    "user",
    "group",
    "ports",
    "to",
    "protect",
    "local",
    "marks",
    "max_forwards",
    "max_elements",
    "max_source_elements",
];

/// A setting that is one of a few words: the value of the word given, or an error at
/// `place` naming the words (`` `x` is not auto, steer or nat ``).
fn choice<T: Copy>(ctx: &mut Ctx, place: &str, v: Option<&Node>, words: &[(&str, T)]) -> Option<T> {
    let o = v.and_then(|v| get_str(ctx, place, v))?;
    let found = words.iter().find(|(w, _)| *w == o).map(|(_, t)| *t);
    if found.is_none() {
        let names: Vec<&str> = words.iter().map(|(w, _)| *w).collect();
        let (last, rest) = names.split_last().expect("a choice of words");
        ctx.err(place, format!("`{o}` is not {} or {last}", rest.join(", ")));
    }
    found
}

pub(super) fn settings(ctx: &mut Ctx, v: Option<&Node>) -> Settings {
    let mut s = Settings::default();
    let Some(v) = v.filter(|v| !v.is_null()) else { return s };
    let Some(m) = v.as_mapping() else {
        ctx.err("settings", format!("expected a mapping, found {}", describe(v)));
        return s;
    };
    check_keys(ctx, "settings", m, SETTINGS_FIELDS);
    if let Some(t) = m.get("table").and_then(|v| get_str(ctx, "settings.table", v)) {
        let ok = t.len() <= 64
            && t.starts_with(|c: char| c.is_ascii_alphabetic())
            && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ok {
            s.table = t.to_string();
        } else {
            ctx.err(
                "settings.table",
                format!("`{t}` is not a table name: use up to 64 of a-z, A-Z, 0-9 and '_', starting with a letter"),
            );
        }
    }
    if let Some(mark) = m.get("mark").and_then(|v| get_u32(ctx, "settings.mark", v)) {
        s.mark = mark;
    }
    if let Some(o) =
        choice(ctx, "settings.on_exit", m.get("on_exit"), &[("remove", OnExit::Remove), ("keep", OnExit::Keep)])
    {
        s.on_exit = o;
    }
    let checks = [("enforce", ListenerCheck::Enforce), ("warn", ListenerCheck::Warn), ("off", ListenerCheck::Off)];
    if let Some(c) = choice(ctx, "settings.listener_check", m.get("listener_check"), &checks) {
        s.listener_check = c;
    }
    let dispatches = [("auto", Dispatch::Auto), ("steer", Dispatch::Steer), ("nat", Dispatch::Nat)];
    if let Some(d) = choice(ctx, "settings.dispatch", m.get("dispatch"), &dispatches) {
        s.dispatch = d;
    }
    let ownerships = [("auto", Ownership::Auto), ("kernel", Ownership::Kernel), ("polled", Ownership::Polled)];
    if let Some(o) = choice(ctx, "settings.ownership", m.get("ownership"), &ownerships) {
        s.ownership = o;
    }
    if let Some(d) = m.get("state_dir").and_then(|v| get_str(ctx, "settings.state_dir", v)) {
        if d.starts_with('/') {
            s.state_dir = d.to_string();
        } else {
            ctx.err("settings.state_dir", format!("`{d}` must be an absolute path"));
        }
    }
    if let Some(sock) = m.get("socket") {
        if let Some(sm) = sock.as_mapping() {
            check_keys(ctx, "settings.socket", sm, SOCKET_FIELDS);
            if let Some(p) = sm.get("path").and_then(|v| get_str(ctx, "settings.socket.path", v)) {
                if p.starts_with('/') {
                    s.socket.path = p.to_string();
                } else {
                    ctx.err("settings.socket.path", format!("`{p}` must be an absolute path"));
                }
            }
            match sm.get("group") {
                None => {}
                Some(Node::Null) => s.socket.group = None,
                Some(v) => s.socket.group = get_str(ctx, "settings.socket.group", v).map(str::to_string),
            }
            if let Some(v) = sm.get("mode") {
                let text = match v {
                    Node::String(t) => Some(t.to_string()),
                    Node::Number(n) => Some(n.to_string()),
                    _ => None,
                };
                match text.as_deref().and_then(|t| u32::from_str_radix(t, 8).ok()).filter(|m| *m <= 0o777) {
                    Some(mode) => s.socket.mode = mode,
                    None => ctx
                        .err("settings.socket.mode", format!("{} is not an octal mode such as \"0660\"", describe(v))),
                }
            }
        } else {
            ctx.err("settings.socket", format!("expected a mapping with path, group, mode, found {}", describe(sock)));
        }
    }
    s.metrics = metrics(ctx, m.get("metrics"));
    s
}

/// `settings.metrics: {listen: "ADDR:PORT"}`; absent or null: no endpoint.
pub(super) fn metrics(ctx: &mut Ctx, v: Option<&Node>) -> Option<MetricsSettings> {
    let v = v.filter(|v| !v.is_null())?;
    let Some(m) = v.as_mapping() else {
        ctx.err("settings.metrics", format!("expected a mapping with listen, found {}", describe(v)));
        return None;
    };
    check_keys(ctx, "settings.metrics", m, METRICS_FIELDS);
    let allow = match m.get("allow") {
        None => Some(MetricsSettings::loopback()),
        Some(v) => {
            let mut nets = Vec::new();
            let mut ok = true;
            for (i, item) in get_list(ctx, "settings.metrics.allow", v).iter().enumerate() {
                let path = format!("settings.metrics.allow[{i}]");
                let Some(s) = get_str(ctx, path.as_str(), item) else {
                    ok = false;
                    continue;
                };
                match s.parse::<IpNet>().or_else(|_| s.parse::<IpAddr>().map(IpNet::from)) {
                    Ok(n) => nets.push(n.trunc()),
                    Err(_) => {
                        ok = false;
                        ctx.err(
                            path.as_str(),
                            format!("`{}` is not a network such as 127.0.0.1/8, ::1 or 10.0.0.5", clip(s)),
                        );
                    }
                }
            }
            ok.then_some(nets)
        }
    };
    let Some(l) = m.get("listen") else {
        ctx.err("settings.metrics", "listen is missing: give an address and port such as \"127.0.0.1:9649\"");
        return None;
    };
    let text = get_str(ctx, "settings.metrics.listen", l)?;
    match text.parse::<std::net::SocketAddr>() {
        Ok(listen) if listen.port() != 0 => Some(MetricsSettings { listen, allow: allow? }),
        _ => {
            ctx.err(
                "settings.metrics.listen",
                format!(
                    "`{text}` is not an address and port such as \"127.0.0.1:9649\" or \"[::1]:9649\" (port 1-65535)"
                ),
            );
            None
        }
    }
}

pub(super) fn port_list(ctx: &mut Ctx, path: &str, v: &Node) -> Vec<PortRange> {
    let items: Vec<(String, &Node)> = match v {
        Node::Sequence(s) => s.iter().enumerate().map(|(i, v)| (format!("{path}[{i}]"), v)).collect(),
        other => vec![(path.to_string(), other)],
    };
    items.into_iter().filter_map(|(p, v)| get_ports(ctx, &p, v)).collect()
}

/// `marks:` of a grant: one mark, a range "0x10-0x1f", or a list of either.
pub(super) fn mark_list(ctx: &mut Ctx, path: &str, v: &Node) -> Vec<MarkRange> {
    let items: Vec<(String, &Node)> = match v {
        Node::Sequence(s) => s.iter().enumerate().map(|(i, v)| (format!("{path}[{i}]"), v)).collect(),
        other => vec![(path.to_string(), other)],
    };
    let mut out = Vec::new();
    for (p, v) in items {
        match v {
            Node::String(t) if t.contains('-') => {
                let (a, b) = t.split_once('-').unwrap_or((t, t));
                let a = get_u32(ctx, &p, &Node::String(Cow::Borrowed(a.trim())));
                let b = get_u32(ctx, &p, &Node::String(Cow::Borrowed(b.trim())));
                match (a, b) {
                    (Some(a), Some(b)) if a <= b => out.push(MarkRange { start: a, end: b }),
                    (Some(_), Some(_)) => ctx.err(&p, format!("mark range `{t}` runs backwards")),
                    _ => {}
                }
            }
            other => {
                if let Some(m) = get_u32(ctx, &p, other) {
                    out.push(MarkRange::single(m));
                }
            }
        }
    }
    out
}

pub(super) fn grants(ctx: &mut Ctx, v: Option<&Node>) -> Vec<Grant> {
    let Some(v) = v else { return vec![] };
    let mut out = Vec::new();
    for (i, g) in get_list(ctx, "grants", v).iter().enumerate() {
        let gp = format!("grants[{i}]");
        let Some(m) = g.as_mapping() else {
            ctx.err(&gp, format!("expected a grant (user or group, ports, to), found {}", describe(g)));
            continue;
        };
        check_keys(ctx, &gp, m, GRANT_FIELDS);
        let subject = match (m.get("user"), m.get("group")) {
            (Some(u), None) => get_str(ctx, &format!("{gp}.user"), u).map(|u| GrantSubject::User(u.to_string())),
            (None, Some(g)) => get_str(ctx, &format!("{gp}.group"), g).map(|g| GrantSubject::Group(g.to_string())),
            _ => {
                ctx.err(&gp, "a grant names exactly one of `user:` or `group:`");
                None
            }
        };
        let ports = match m.get("ports") {
            Some(v) => port_list(ctx, &format!("{gp}.ports"), v),
            None => {
                ctx.err(&gp, "missing required field `ports`");
                continue;
            }
        };
        let to = match m.get("to") {
            Some(v) => port_list(ctx, &format!("{gp}.to"), v),
            None => vec![PortRange { start: 1024, end: 65535 }],
        };
        let protect = m.get("protect").map_or(Some(false), |v| get_bool(ctx, &format!("{gp}.protect"), v));
        let local = m.get("local").map_or(Some(true), |v| get_bool(ctx, &format!("{gp}.local"), v));
        let marks = m.get("marks").map(|v| mark_list(ctx, &format!("{gp}.marks"), v));
        let max_forwards = match m.get("max_forwards") {
            None => Some(DEFAULT_MAX_FORWARDS),
            Some(Node::Number(n)) if n.as_u64().is_some_and(|n| n <= 1_000_000) => n.as_u64().map(|n| n as u32),
            Some(v) => {
                ctx.err(&format!("{gp}.max_forwards"), format!("{} is not a count (0 to 1000000)", describe(v)));
                None
            }
        };
        let max_elements =
            count_field(ctx, &gp, m.get("max_elements"), "max_elements", crate::budget::DEFAULT_MAX_ELEMENTS);
        let max_source_elements = count_field(
            ctx,
            &gp,
            m.get("max_source_elements"),
            "max_source_elements",
            crate::budget::DEFAULT_MAX_SOURCE_ELEMENTS,
        );
        if let (
            Some(subject),
            Some(protect),
            Some(local),
            Some(max_forwards),
            Some(max_elements),
            Some(max_source_elements),
        ) = (subject, protect, local, max_forwards, max_elements, max_source_elements)
        {
            out.push(Grant {
                subject,
                ports,
                to,
                protect,
                local,
                marks,
                max_forwards,
                max_elements,
                max_source_elements,
            });
        }
    }
    out
}

/// A grant's element budget field: a count from 0 to 10,000,000, `default` when absent.
fn count_field(ctx: &mut Ctx, gp: &str, v: Option<&Node>, name: &str, default: u64) -> Option<u64> {
    match v {
        None => Some(default),
        Some(Node::Number(n)) if n.as_u64().is_some_and(|n| n <= 10_000_000) => n.as_u64(),
        Some(v) => {
            ctx.err(&format!("{gp}.{name}"), format!("{} is not a count (0 to 10000000)", describe(v)));
            None
        }
    }
}
