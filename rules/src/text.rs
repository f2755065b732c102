//! Free text as portd accepts, logs and prints it: what counts as a control or format
//! character, and how such characters are escaped so that no client-chosen string can
//! start a line, reorder what a terminal shows, or hide text.

#![forbid(unsafe_code)]

use std::borrow::Cow;

/// True for a character of Unicode's general category Cf (format): soft hyphen, the bidi
/// embeddings, overrides and isolates (U+202A–U+202E, U+2066–U+2069), zero-width
/// characters, the byte order mark, tags and the like (Unicode 15.1).
pub fn is_format(c: char) -> bool {
    matches!(
        c as u32,
        0xAD | 0x600..=0x605
            | 0x61C
            | 0x6DD
            | 0x70F
            | 0x890..=0x891
            | 0x8E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

/// True for what free text may not hold: control characters (C0, DEL, C1), format
/// characters ([`is_format`]) and the line and paragraph separators U+2028, U+2029.
pub fn is_unprintable(c: char) -> bool {
    c.is_control() || is_format(c) || matches!(c, '\u{2028}' | '\u{2029}')
}

/// Appends `c`, escaped when it is [unprintable](is_unprintable) or a backslash:
/// `\n`, `\r`, `\t`, `\\`, else `\u{202e}`.
pub fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\\' => out.push_str("\\\\"),
        c if is_unprintable(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        c => out.push(c),
    }
}

/// `s` with every [unprintable](is_unprintable) character and backslash escaped; borrowed
/// when there is nothing to escape.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c == '\\' || is_unprintable(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

/// What is wrong with free text `s`, if anything: the first unprintable character, named
/// with its position (1-based, in characters).
pub fn unprintable_problem(s: &str) -> Option<String> {
    let (at, c) = s.chars().enumerate().find(|(_, c)| is_unprintable(*c))?;
    let kind = if c.is_control() {
        "the control character"
    } else if matches!(c, '\u{2028}' | '\u{2029}') {
        "the line or paragraph separator"
    } else {
        "the invisible format character"
    };
    Some(format!("{kind} U+{:04X} at character {}; use printable text on one line", c as u32, at + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bidi_overrides_isolates_and_separators_are_refused_with_their_position() {
        for c in ['\u{202A}', '\u{202E}', '\u{2066}', '\u{2069}', '\u{200B}', '\u{FEFF}', '\u{E0041}', '\u{AD}'] {
            assert!(is_format(c), "{c:?} is Cf");
        }
        let p = unprintable_problem("shop \u{202E}gnp.exe").expect("refused");
        assert!(p.contains("U+202E at character 6"), "{p}");
        let p = unprintable_problem("a\u{2028}b").expect("refused");
        assert!(p.contains("separator U+2028 at character 2"), "{p}");
        let p = unprintable_problem("a\nb").expect("refused");
        assert!(p.contains("control character U+000A"), "{p}");
        assert_eq!(unprintable_problem("café — ok"), None);
        assert!(!is_format('é') && !is_format(' ') && !is_format('a'));
    }

    #[test]
    fn escaping_leaves_no_line_break_or_format_character() {
        let e = escape("x\r\nuid 0 (root)\u{202E}\u{85}\\");
        assert_eq!(e, "x\\r\\nuid 0 (root)\\u{202e}\\u{85}\\\\");
        assert!(matches!(escape("plain"), Cow::Borrowed("plain")));
    }
}
