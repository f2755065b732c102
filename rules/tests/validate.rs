//! One test per validation rule: each mistake is reported with file, line, column and path.

use portd_rules::{parse_config, parse_rules, Diagnostics};

fn errors(text: &str) -> Diagnostics {
    match parse_rules("rules.yaml", text) {
        Ok(r) => panic!("expected errors, parsed {r:?}"),
        Err(d) => d,
    }
}

fn one(text: &str) -> String {
    let d = errors(text);
    assert_eq!(d.len(), 1, "expected exactly one error, got:\n{d}");
    d.0[0].to_string()
}

const HEAD: &str = "version: 1\nforwards:\n";

#[test]
fn port_out_of_range_is_located() {
    let e = one(&format!("{HEAD}  - name: http\n    port: 70000\n    to: 8080\n"));
    assert_eq!(e, "rules.yaml:4:11: forwards[0].port: 70000 is not a port (1-65535)");
}

#[test]
fn port_zero_and_garbage_are_refused() {
    assert!(one(&format!("{HEAD}  - name: a\n    port: 0\n    to: 8080\n")).contains("0 is not a port"));
    assert!(one(&format!("{HEAD}  - name: a\n    port: http\n    to: 8080\n")).contains("`http` is not a port number"));
    assert!(one(&format!("{HEAD}  - name: a\n    port: [1]\n    to: 8080\n")).contains("expected a port"));
}

#[test]
fn unknown_field_points_at_the_key_with_a_hint() {
    let e = one(&format!("{HEAD}  - name: http\n    port: 80\n    to: 8080\n    prot: tcp\n"));
    assert_eq!(e, "rules.yaml:6:5: forwards[0].prot: unknown field `prot`; did you mean `port`?");
    let e = one("version: 1\nforwads: []\n");
    assert!(e.starts_with("rules.yaml:2:1: forwads: unknown field"), "{e}");
}

#[test]
fn wrong_types_are_named() {
    let e = one(&format!("{HEAD}  - name: http\n    port: 80\n    to: 8080\n    local: yes please\n"));
    assert!(e.contains("forwards[0].local: expected true or false"), "{e}");
    let e = one(&format!("{HEAD}  - name: http\n    port: 80\n    to: 8080\n    proto: sctp\n"));
    assert!(e.contains("rules.yaml:6:12: forwards[0].proto: unknown protocol `sctp`; use tcp, udp or both"), "{e}");
    let e = one(&format!("{HEAD}  - name: http\n    port: 80\n    to: 8080\n    family: ipx\n"));
    assert!(e.contains("unknown family `ipx`"), "{e}");
}

#[test]
fn unequal_ranges_are_refused() {
    let e = one(&format!("{HEAD}  - name: pool\n    port: 8000-8009\n    to: 9000-9004\n"));
    assert!(
        e.contains("rules.yaml:5:9: forwards[0].to: `9000-9004` has 5 port(s) but `port: 8000-8009` has 10"),
        "{e}"
    );
    assert!(one(&format!("{HEAD}  - name: pool\n    port: 8000-8009\n    to: 9000\n")).contains("same length"));
    assert!(one(&format!("{HEAD}  - name: pool\n    port: 9-1\n    to: 100-108\n")).contains("runs backwards"));
}

#[test]
fn duplicate_names_point_at_the_second() {
    let e =
        one(&format!("{HEAD}  - name: http\n    port: 80\n    to: 8080\n  - name: http\n    port: 81\n    to: 8081\n"));
    assert_eq!(
        e,
        "rules.yaml:6:11: forwards[1].name: duplicate name `http` (first used on line 3); names must be unique"
    );
}

#[test]
fn two_forwards_claiming_one_port_are_refused() {
    let e = one(&format!(
        "{HEAD}  - name: a\n    port: 80-90\n    to: 8080-8090\n  - name: b\n    port: 85\n    to: 9000\n    proto: both\n"
    ));
    assert!(e.contains("forwards[1].port: tcp port 85 (ipv4) is already forwarded by `a`"), "{e}");
    // Different protocol or family does not clash.
    let ok = format!("{HEAD}  - name: a\n    port: 80\n    to: 8080\n  - name: b\n    port: 80\n    to: 9000\n    proto: udp\n  - name: c\n    port: 443\n    to: 8443\n    family: ipv4\n  - name: d\n    port: 443\n    to: 9443\n    family: ipv6\n");
    assert_eq!(parse_rules("r", &ok).expect("valid").forwards.len(), 4);
}

#[test]
fn target_equal_to_public_port_is_refused() {
    assert!(one(&format!("{HEAD}  - name: a\n    port: 8080\n    to: 8080\n")).contains("is the public port itself"));
}

#[test]
fn names_sources_interfaces_marks_are_checked() {
    assert!(one(&format!("{HEAD}  - name: Web!\n    port: 80\n    to: 8080\n")).contains("is not a valid name"));
    assert!(one(&format!("{HEAD}  - name: a\n    port: 80\n    to: 8080\n    sources: [10.0.0.0/33]\n"))
        .contains("forwards[0].sources[0]: `10.0.0.0/33` is not an address or network"));
    assert!(one(&format!(
        "{HEAD}  - name: a\n    port: 80\n    to: 8080\n    family: ipv4\n    sources: [\"2001:db8::/32\"]\n"
    ))
    .contains("is an ipv6 network but the forward is `family: ipv4`"));
    assert!(one(&format!("{HEAD}  - name: a\n    port: 80\n    to: 8080\n    interfaces: [averyveryverylongname]\n"))
        .contains("is not an interface name"));
    assert!(one(&format!("{HEAD}  - name: a\n    port: 80\n    to: 8080\n    mark: 0x1ffffffff\n"))
        .contains("is not a 32-bit mark"));
    let r = parse_rules(
        "r",
        &format!("{HEAD}  - name: a\n    port: 80\n    to: 8080\n    mark: 0x2a\n    sources: [203.0.113.9/24]\n"),
    )
    .expect("valid");
    assert_eq!(r.forwards[0].mark, Some(0x2a));
    assert_eq!(r.forwards[0].sources[0].to_string(), "203.0.113.0/24", "host bits are cleared");
}

#[test]
fn missing_fields_and_version() {
    assert!(one(&format!("{HEAD}  - name: a\n    port: 80\n")).contains("forwards[0]: missing required field `to`"));
    assert!(one("forwards: []\n").contains("missing `version: 1`"));
    assert!(one("version: 2\nforwards: []\n").contains("rules.yaml:1:10: version: unsupported version"));
}

#[test]
fn five_mistakes_give_five_located_errors() {
    let text = "version: 1
forwards:
  - name: http
    port: 70000
    to: 8080
  - name: http
    port: 81
    to: 8081
  - name: pool
    port: 8000-8009
    to: 9000-9001
  - name: dns
    port: 53
    to: 5353
    proto: sctp
  - name: self
    port: 9090
    to: 9090
";
    let d = errors(text);
    let lines: Vec<String> = d.0.iter().map(|e| e.to_string()).collect();
    assert_eq!(lines.len(), 5, "{lines:#?}");
    assert!(d.0.iter().all(|e| e.line > 0 && e.column > 0 && !e.path.is_empty()), "{lines:#?}");
    assert_eq!(lines[0], "rules.yaml:4:11: forwards[0].port: 70000 is not a port (1-65535)");
    assert!(lines[1].starts_with("rules.yaml:6:11: forwards[1].name: duplicate name `http`"));
    assert!(lines[2].starts_with("rules.yaml:11:9: forwards[2].to:"));
    assert!(lines[3].starts_with("rules.yaml:15:12: forwards[3].proto:"));
    assert!(lines[4].starts_with("rules.yaml:18:9: forwards[4].to: target 9090 is the public port itself"));
}

#[test]
fn syntax_errors_are_located() {
    let d = errors("version: 1\nforwards:\n  - name: [unclosed\n");
    assert_eq!(d.len(), 1);
    assert!(d.0[0].line >= 3, "{d}");
}

#[test]
fn oversized_files_are_refused_quickly() {
    let big = format!("version: 1\n# {}\n", "x".repeat(17 * 1024 * 1024));
    let t = std::time::Instant::now();
    let e = one(&big);
    assert!(e.contains("the limit is 16 MiB"), "{e}");
    assert!(t.elapsed().as_secs() < 2);
}

#[test]
fn alias_bombs_are_refused_quickly() {
    let mut text = String::from("version: 1\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let p = i - 1;
        text.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
    }
    text.push_str("forwards: *a9\n");
    let t = std::time::Instant::now();
    let e = one(&text);
    assert!(e.contains("YAML aliases add") && e.contains("the limit is 4 MiB"), "{e}");
    assert!(t.elapsed().as_secs() < 2, "took {:?}", t.elapsed());
    // Wide rather than deep: one list of 6,000 items aliased 6,000 times (30 KB, 36
    // million nodes) follows few aliases, and is refused by what they expand to.
    let text =
        format!("version: 1\nx: &a [{}]\nforwards: [{}]\n", vec!["0"; 6000].join(","), vec!["*a"; 6000].join(","));
    assert!(text.len() < 31_000);
    let e = one(&text);
    assert!(e.starts_with("rules.yaml:3:"), "located at the alias that crossed the bound: {e}");
    assert!(e.contains("YAML aliases add") && e.contains("the limit is 4 MiB"), "{e}");
    // One long string aliased again and again: 1 MiB of text, 8 MiB of copies.
    let text = format!("version: 1\nd: &d \"{}\"\nforwards: [*d, *d, *d, *d, *d, *d, *d, *d]\n", "x".repeat(1 << 20));
    assert!(one(&text).contains("YAML aliases add 8.0 MiB"), "{:.300}", one(&text));
    // What parsing may cost is known before it starts: the aliases' share included.
    assert!(portd_rules::load::parse_cost(&text) >= 2 * portd_rules::load::ALIAS_WEIGHT as usize);
}

#[test]
fn config_is_validated_with_settings_and_grants() {
    let text = "version: 1
settings:
  table: portd
  mark: 0x10
  on_exit: keep
  socket: {path: /run/p.sock, group: deploy, mode: \"0640\"}
  state_dir: /var/lib/p
grants:
  - user: web
    ports: [80, 443]
    to: \"1024-65535\"
  - group: deploy
    ports: [\"8000-8099\"]
forwards:
  - name: http
    port: 80
    to: 8080
";
    let c = parse_config("portd.yaml", text).expect("valid config");
    assert_eq!(c.settings.mark, 0x10);
    assert_eq!(c.settings.socket.mode, 0o640);
    assert_eq!(c.grants.len(), 2);
    assert_eq!(c.forwards.len(), 1);
    let bad = "version: 1\nsettings:\n  on_exit: explode\n  tabel: x\ngrants:\n  - ports: [80]\n";
    let d = parse_config("portd.yaml", bad).expect_err("invalid");
    assert_eq!(d.len(), 3, "{d}");
    assert!(d.to_string().contains("portd.yaml:3:12: settings.on_exit: `explode` is not remove or keep"), "{d}");
    assert!(d.to_string().contains("a grant names exactly one of `user:` or `group:`"), "{d}");
    let words = "version: 1\nsettings:\n  dispatch: fast\n  ownership: mine\n  listener_check: maybe\n";
    let d = parse_config("portd.yaml", words).expect_err("invalid").to_string();
    assert!(d.contains("settings.dispatch: `fast` is not auto, steer or nat"), "{d}");
    assert!(d.contains("settings.ownership: `mine` is not auto, kernel or polled"), "{d}");
    assert!(d.contains("settings.listener_check: `maybe` is not enforce, warn or off"), "{d}");
}

#[test]
fn metrics_listener_is_optional_and_its_address_is_checked() {
    let none = parse_config("portd.yaml", "version: 1\n").expect("valid config");
    assert_eq!(none.settings.metrics, None, "absent: no endpoint");
    let v6 = parse_config("portd.yaml", "version: 1\nsettings:\n  metrics: {listen: \"[::1]:9649\"}\n").expect("valid");
    assert_eq!(v6.settings.metrics.map(|m| m.listen.to_string()), Some("[::1]:9649".into()));
    let bad = "version: 1\nsettings:\n  metrics:\n    listen: \"localhost:http\"\n";
    let d = parse_config("portd.yaml", bad).expect_err("invalid");
    assert_eq!(d.len(), 1, "{d}");
    assert!(
        d.to_string()
            .starts_with("portd.yaml:4:13: settings.metrics.listen: `localhost:http` is not an address and port"),
        "{d}"
    );
    let zero = parse_config("portd.yaml", "version: 1\nsettings:\n  metrics: {listen: \"127.0.0.1:0\"}\n");
    assert!(zero.expect_err("port 0").to_string().contains("port 1-65535"));
    let typo = parse_config("portd.yaml", "version: 1\nsettings:\n  metrics: {addr: \"127.0.0.1:9649\"}\n");
    assert!(typo.expect_err("unknown key").to_string().contains("settings.metrics"));
}

#[test]
fn deep_nesting_is_refused_before_the_parser_runs() {
    let t = std::time::Instant::now();
    for deep in [
        format!("version: 1\nforwards: {}{}\n", "{a: ".repeat(100_000), "}".repeat(100_000)),
        format!("version: 1\nforwards: {}1{}\n", "[".repeat(100_000), "]".repeat(100_000)),
        format!("version: 1\nforwards:\n{}x\n", "- ".repeat(200_000)),
        format!(
            "version: 1\nforwards:\n{}",
            (0..2000).map(|i| format!("{}a{i}:\n", " ".repeat(i))).collect::<String>()
        ),
    ] {
        let e = parse_rules("deep.yaml", &deep).expect_err("refused").to_string();
        assert!(e.contains("nesting is deeper than 64 levels"), "{}", &e[..e.len().min(300)]);
    }
    let many = format!("version: 1\nforwards: [{}]\n", "1,".repeat(1_100_000));
    let e = parse_rules("many.yaml", &many).expect_err("refused").to_string();
    assert!(e.contains("YAML nodes"), "{e}");
    assert!(t.elapsed() < std::time::Duration::from_secs(2), "the shape check is linear: {:?}", t.elapsed());
    // Ordinary files pass: flow mappings per forward, quotes with brackets, comments.
    let ok = "version: 1 # {[\nforwards:\n  - {name: a, port: 80, to: 8080, sources: [\"10.0.0.0/8\"]}\n  - name: b # [[[[\n    port: \"81\"\n    to: 8081\n";
    assert!(parse_rules("ok.yaml", ok).is_ok());
}

#[test]
fn tabs_in_indentation_get_a_hint() {
    let e = one("version: 1\nforwards:\n\t- name: a\n");
    assert!(e.starts_with("rules.yaml:3:1: YAML does not allow tabs for indentation"), "{e}");
    let e = one("version: 1\nforwards:\n  - name: a\n  \tport: 80\n    to: 8080\n");
    assert!(e.starts_with("rules.yaml:4:3: YAML does not allow tabs for indentation"), "{e}");
    assert!(!e.contains("cannot start any token"), "the parser's own words are replaced: {e}");
}

#[test]
fn wrong_indentation_gets_a_hint_with_its_line() {
    // A key indented deeper than its mapping's keys.
    let e = one("version: 1\nforwards:\n  - name: a\n      port: 80\n    to: 8080\n");
    assert!(e.contains("likely wrong indentation at line 4"), "{e}");
    assert!(!e.contains("mapping values are not allowed"), "the parser's own words are replaced: {e}");
    // A key indented less than its mapping's keys.
    let e = one("version: 1\nforwards:\n  - name: a\n    port: 80\n   to: 8080\n");
    assert!(e.contains("likely wrong indentation at line 5"), "{e}");
    // In the daemon's config too.
    let e = parse_config("portd.yaml", "version: 1\nsettings:\n  table: portd\n    mark: 0x1\n")
        .expect_err("bad indentation")
        .to_string();
    assert!(e.contains("likely wrong indentation at line 4"), "{e}");
}

#[test]
fn many_problems_are_listed_up_to_a_hundred_and_counted_beyond() {
    let mut text = String::from("version: 1\nforwards:\n");
    for i in 0..2_500 {
        text.push_str(&format!("  - {{name: f{i}, port: 70000, to: 8080}}\n"));
    }
    let d = portd_rules::parse_rules("r.yaml", &text).expect_err("invalid");
    assert_eq!(d.len(), portd_rules::load::MAX_DIAGNOSTICS + 1);
    let last = d.0.last().expect("summary").to_string();
    assert_eq!(last, "r.yaml: … and 2,400 more problem(s) not listed; fix these first");
    let size: usize = d.0.iter().map(|d| d.to_string().len()).sum();
    assert!(size < 20_000, "{size} bytes of diagnostics");
}

#[test]
fn a_long_unknown_key_is_named_cut_short() {
    let key = "k".repeat(1000);
    let d = errors(&format!("version: 1\nforwards:\n  - {{name: g, port: 1, to: 2, {key}: 1}}\n"));
    assert_eq!(d.len(), 1, "{d}");
    assert!(d.0[0].path.starts_with("forwards[0].kkk"), "{}", d.0[0].path);
    assert_eq!(d.0[0].path.chars().count(), 201, "cut to 200 characters and an ellipsis");
    assert!(d.0[0].line == 3, "still located: {}", d.0[0]);
}

#[test]
fn metrics_allow_defaults_to_loopback_and_locates_a_bad_network() {
    let c =
        parse_config("portd.yaml", "version: 1\nsettings:\n  metrics: {listen: \"127.0.0.1:9649\"}\n").expect("valid");
    let m = c.settings.metrics.expect("metrics");
    assert!(m.allows("127.0.0.1".parse().expect("ip")) && m.allows("::1".parse().expect("ip")));
    assert!(m.allows("::ffff:127.0.0.1".parse().expect("ip")), "an IPv4-mapped loopback peer");
    assert!(!m.allows("192.0.2.1".parse().expect("ip")));
    let c = parse_config(
        "portd.yaml",
        "version: 1\nsettings:\n  metrics: {listen: \"[::]:9649\", allow: [192.0.2.7/24, 10.0.0.5]}\n",
    )
    .expect("valid");
    let m = c.settings.metrics.expect("metrics");
    assert!(m.allows("192.0.2.200".parse().expect("ip")) && m.allows("10.0.0.5".parse().expect("ip")));
    assert!(!m.allows("127.0.0.1".parse().expect("ip")), "the list replaces the default");
    let d = parse_config(
        "portd.yaml",
        "version: 1\nsettings:\n  metrics: {listen: \"127.0.0.1:9649\", allow: [nowhere]}\n",
    )
    .expect_err("invalid");
    assert!(d.to_string().starts_with("portd.yaml:3:47: settings.metrics.allow[0]: `nowhere` is not a network"), "{d}");
}
