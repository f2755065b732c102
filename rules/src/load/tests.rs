//! Hints for mistyped fields.

use super::config::{GRANT_FIELDS, METRICS_FIELDS, SETTINGS_FIELDS, SOCKET_FIELDS};
use super::forward::FORWARD_FIELDS;
use super::suggest::{distance, suggest};
use super::{CONFIG_FIELDS, RULES_FIELDS};

/// Every field of forwards, settings, grants and both files gets a "did you mean" for
/// its likely typos: a letter doubled, dropped or swapped, other case, `-` for `_`.
#[test]
fn every_field_has_a_did_you_mean() {
    let lists =
        [RULES_FIELDS, CONFIG_FIELDS, SETTINGS_FIELDS, SOCKET_FIELDS, METRICS_FIELDS, GRANT_FIELDS, FORWARD_FIELDS];
    for list in lists {
        for field in list {
            let chars: Vec<char> = field.chars().collect();
            let mut typos = vec![format!("{field}{}", chars[chars.len() - 1]), field.to_uppercase()];
            typos.push(field.replace('_', "-"));
            if chars.len() > 3 {
                typos.push(chars[..chars.len() - 1].iter().collect());
            }
            if chars.len() > 2 {
                let mut swapped = chars.clone();
                swapped.swap(1, 2);
                typos.push(swapped.into_iter().collect());
            }
            for typo in typos.iter().filter(|t| t.as_str() != *field) {
                let got = suggest(list, typo);
                let norm = typo.to_ascii_lowercase().replace('-', "_");
                // `prot` is as near to `port` as to `proto`: either is a fair guess.
                let ambiguous = list.iter().any(|o| o != field && distance(o, &norm) <= distance(field, &norm));
                if ambiguous {
                    assert!(got.is_some(), "`{typo}` in {list:?}: no hint");
                } else {
                    assert_eq!(got, Some(*field), "`{typo}` in {list:?}");
                }
            }
        }
    }
}

#[test]
fn other_tools_words_are_suggested_and_far_words_are_not() {
    assert_eq!(suggest(FORWARD_FIELDS, "target"), Some("to"));
    assert_eq!(suggest(FORWARD_FIELDS, "tp"), Some("to"));
    assert_eq!(suggest(FORWARD_FIELDS, "protocol"), Some("proto"));
    assert_eq!(suggest(FORWARD_FIELDS, "interface"), Some("interfaces"));
    assert_eq!(suggest(FORWARD_FIELDS, "desc"), Some("description"));
    assert_eq!(suggest(FORWARD_FIELDS, "comment"), Some("description"));
    assert_eq!(suggest(FORWARD_FIELDS, "prot"), Some("port"));
    assert_eq!(suggest(GRANT_FIELDS, "port"), Some("ports"));
    assert_eq!(suggest(GRANT_FIELDS, "quota"), Some("max_forwards"));
    assert_eq!(suggest(CONFIG_FIELDS, "grant"), Some("grants"));
    assert_eq!(suggest(FORWARD_FIELDS, "grant"), None, "a synonym only for a field of that place");
    assert_eq!(suggest(FORWARD_FIELDS, "zebra"), None);
}
