//! `description:` of a forward: kept as written, refused with a located error when too
//! long or not printable, and written back by serialization (what `export` prints).

use portd_rules::parse_rules;

#[test]
fn a_description_is_kept_and_exported() {
    let text =
        "version: 1\nforwards:\n  - name: web\n    port: 80\n    to: 8080\n    description: \"shop, façade — v2\"\n";
    let r = parse_rules("r.yaml", text).expect("valid");
    assert_eq!(r.forwards[0].description.as_deref(), Some("shop, façade — v2"));
    let yaml = serde_yaml::to_string(&r).expect("yaml");
    assert!(yaml.contains("description: shop, façade — v2"), "{yaml}");
    let back = parse_rules("back.yaml", &yaml).expect("round trip");
    assert_eq!(back, r);
    // Absent stays absent, in both directions.
    let r = parse_rules("r.yaml", "version: 1\nforwards: [{name: a, port: 80, to: 8080}]\n").expect("valid");
    assert_eq!(r.forwards[0].description, None);
    assert!(!serde_yaml::to_string(&r).expect("yaml").contains("description"));
}

#[test]
fn long_or_unprintable_descriptions_are_located_errors() {
    let long = "é".repeat(201);
    let text = format!(
        "version: 1\nforwards:\n  - name: a\n    port: 80\n    to: 8080\n    description: {long}\n  - name: b\n    port: 81\n    to: 8081\n    description: \"tab\\there\"\n  - name: c\n    port: 82\n    to: 8082\n    description: 42\n"
    );
    let d = parse_rules("r.yaml", &text).expect_err("invalid");
    let lines: Vec<String> = d.0.iter().map(|d| d.to_string()).collect();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(
        lines[0].starts_with("r.yaml:6:18: forwards[0].description: description has 201 characters; the limit is 200"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with(
            "r.yaml:10:18: forwards[1].description: description contains the control character U+0009 at character 4"
        ),
        "{}",
        lines[1]
    );
    assert!(lines[2].starts_with("r.yaml:14:18: forwards[2].description: expected a string"), "{}", lines[2]);
    // Exactly 200 characters is fine.
    let ok = text.replace(&long, &"é".repeat(200));
    let d = parse_rules("r.yaml", &ok).expect_err("the other two are still wrong");
    assert_eq!(d.0.len(), 2);
}

#[test]
fn bidi_overrides_isolates_zero_width_and_line_separators_are_located_errors() {
    // Each would make a status line read differently from what it holds.
    for (text, code, at) in [
        ("shop \u{202E}gnp.exe", "U+202E", 6),
        ("\u{2066}admin\u{2069}", "U+2066", 1),
        ("a\u{200B}b", "U+200B", 2),
        ("one\u{2028}two", "U+2028", 4),
        ("one\u{2029}two", "U+2029", 4),
        ("x\u{FEFF}", "U+FEFF", 2),
    ] {
        let file =
            format!("version: 1\nforwards:\n  - name: a\n    port: 80\n    to: 8080\n    description: \"{text}\"\n");
        let d = parse_rules("r.yaml", &file).expect_err("refused");
        let line = d.0[0].to_string();
        assert!(line.starts_with("r.yaml:6:18: forwards[0].description: description contains"), "{line}");
        assert!(line.contains(&format!("{code} at character {at}")), "{text:?}: {line}");
    }
}
