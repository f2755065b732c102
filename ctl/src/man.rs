//! `portctl man DIR`: writes portctl(1), portd(8) and portd.yaml(5).
//!
//! All three are written by hand in `man/`. The OPTIONS and COMMANDS sections of
//! portctl(1) are rendered here from the clap definitions, so the page lists every
//! command and option exactly as `--help` does.

use clap::{Arg, Command};
use std::path::Path;

const PORTCTL: &str = include_str!("../../man/portctl.1");
const PORTD: &str = include_str!("../../man/portd.8");
const PORTD_YAML: &str = include_str!("../../man/portd.yaml.5");

/// The pages as (file name, roff text).
pub fn pages(cli: Command) -> Vec<(&'static str, String)> {
    vec![("portctl.1", portctl(cli)), ("portd.8", PORTD.to_string()), ("portd.yaml.5", PORTD_YAML.to_string())]
}

/// Writes every page into `dir` (created if missing).
pub fn write(dir: &Path, cli: Command) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, text) in pages(cli) {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}

/// portctl(1): the hand-written page with its `@OPTIONS@` and `@COMMANDS@` sections
/// replaced by what clap defines.
fn portctl(mut cli: Command) -> String {
    cli.build();
    let mut out = String::new();
    let mut skipping = false;
    for line in PORTCTL.lines() {
        if skipping {
            if !line.starts_with(".SH ") {
                continue;
            }
            skipping = false;
        }
        if line.contains("@OPTIONS@") {
            for a in cli.get_arguments().filter(|a| !a.is_positional()) {
                option(&mut out, a);
            }
            skipping = true;
        } else if line.contains("@COMMANDS@") {
            for sub in cli.get_subcommands().filter(|s| s.get_name() != "help" && !s.is_hide_set()) {
                command(&mut out, sub);
            }
            skipping = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Escapes text for a roff text line.
fn esc(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

fn value_name(a: &Arg) -> String {
    a.get_value_names().and_then(|v| v.first()).map_or_else(|| a.get_id().as_str().to_uppercase(), |v| v.to_string())
}

/// What an option looks like on the command line, in roff: `\fB\-\-owner\fR \fIOWNER\fR`.
fn spelling(a: &Arg) -> String {
    let mut names = Vec::new();
    if let Some(s) = a.get_short() {
        names.push(format!("\\fB\\-{}\\fR", esc(&s.to_string())));
    }
    if let Some(l) = a.get_long() {
        names.push(format!("\\fB\\-\\-{}\\fR", esc(l)));
    }
    let takes_value = a.get_num_args().is_some_and(|n| n.takes_values());
    let value = if takes_value { format!(" \\fI{}\\fR", esc(&value_name(a))) } else { String::new() };
    format!("{}{value}", names.join(", "))
}

/// A sentence: clap drops the final period of a one-line doc comment.
fn sentence(s: String) -> String {
    match s.trim_end().chars().last() {
        Some('.' | '!' | '?' | ':') | None => s,
        Some(_) => format!("{}.", s.trim_end()),
    }
}

fn help(a: &Arg) -> String {
    sentence(a.get_long_help().or(a.get_help()).map(ToString::to_string).unwrap_or_default())
}

fn option(out: &mut String, a: &Arg) {
    out.push_str(&format!(".TP\n{}\n{}\n", spelling(a), esc(&help(a))));
    let values: Vec<String> = a
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| format!("\\fB{}\\fR", esc(v.get_name())))
        .collect();
    if !values.is_empty() && a.get_action().takes_values() {
        out.push_str(&format!("One of {}.\n", values.join(", ")));
    }
    let defaults: Vec<String> = if !a.get_action().takes_values() {
        Vec::new()
    } else {
        a.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect()
    };
    if !defaults.is_empty() {
        out.push_str(&format!("Default: \\fB{}\\fR.\n", esc(&defaults.join(" "))));
    }
    if let Some(env) = a.get_env() {
        out.push_str(&format!("Environment: \\fB{}\\fR.\n", esc(&env.to_string_lossy())));
    }
}

/// One command: its synopsis, what it does, its arguments and options.
fn command(out: &mut String, sub: &Command) {
    let own = |a: &&Arg| !a.is_global_set() && !matches!(a.get_id().as_str(), "help" | "version");
    let mut synopsis = format!("\\fBportctl {}\\fR", esc(sub.get_name()));
    for a in sub.get_arguments().filter(own) {
        let part = if a.is_positional() {
            let v = format!("\\fI{}\\fR", esc(&value_name(a)));
            let v = if matches!(a.get_action(), clap::ArgAction::Append) { format!("{v}...") } else { v };
            if a.is_required_set() {
                v
            } else {
                format!("[{v}]")
            }
        } else {
            format!("[{}]", spelling(a))
        };
        synopsis.push(' ');
        synopsis.push_str(&part);
    }
    out.push_str(&format!(".SS {}\n", esc(sub.get_name())));
    out.push_str(&format!("{synopsis}\n.br\n"));
    let about = sentence(sub.get_long_about().or(sub.get_about()).map(ToString::to_string).unwrap_or_default());
    out.push_str(&format!("{}\n", esc(&about)));
    let args: Vec<&Arg> = sub.get_arguments().filter(own).collect();
    if args.is_empty() {
        return;
    }
    out.push_str(".RS\n");
    for a in args {
        if a.is_positional() {
            out.push_str(&format!(".TP\n\\fI{}\\fR\n{}\n", esc(&value_name(a)), esc(&help(a))));
        } else {
            option(out, a);
        }
    }
    out.push_str(".RE\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn page() -> String {
        portctl(crate::cli::Cli::command())
    }

    #[test]
    fn portctl_page_lists_every_command_and_option() {
        let page = page();
        let mut cli = crate::cli::Cli::command();
        cli.build();
        for sub in cli.get_subcommands().filter(|s| s.get_name() != "help") {
            assert!(page.contains(&format!(".SS {}\n", esc(sub.get_name()))), "command {} missing", sub.get_name());
            for a in sub.get_arguments().filter_map(Arg::get_long) {
                assert!(page.contains(&format!("\\-\\-{}", esc(a))), "option --{a} of {} missing", sub.get_name());
            }
        }
        assert!(!page.contains("@COMMANDS@") && !page.contains("@OPTIONS@"), "placeholders are replaced");
    }

    #[test]
    fn pages_have_the_sections_operators_look_for() {
        let pages = pages(crate::cli::Cli::command());
        let want: [(&str, &[&str]); 3] = [
            (
                "portctl.1",
                &[
                    "NAME",
                    "SYNOPSIS",
                    "DESCRIPTION",
                    "OPTIONS",
                    "COMMANDS",
                    "EXIT STATUS",
                    "ENVIRONMENT",
                    "FILES",
                    "EXAMPLES",
                    "SEE ALSO",
                ],
            ),
            ("portd.8", &["NAME", "SYNOPSIS", "OPTIONS", "START ORDER", "SIGNALS", "EXIT STATUS", "FILES", "SEE ALSO"]),
            ("portd.yaml.5", &["NAME", "RULES FILE", "CONFIGURATION FILE", "OWNERS", "FILES", "EXAMPLES"]),
        ];
        for ((name, text), (want_name, sections)) in pages.iter().zip(want) {
            assert_eq!(*name, want_name);
            for s in sections {
                assert!(text.contains(&format!("\n.SH {s}\n")), "{name} lacks section {s}");
            }
        }
    }

    #[test]
    fn config_page_documents_every_field() {
        for field in [
            "name",
            "port",
            "to",
            "proto",
            "family",
            "local",
            "interfaces",
            "sources",
            "mark",
            "protect",
            "description",
            "table",
            "on_exit",
            "socket",
            "state_dir",
            "listener_check",
            "user",
            "group",
            "ports",
            "marks",
            "max_forwards",
            "max_elements",
            "max_source_elements",
        ] {
            assert!(
                PORTD_YAML.contains(&format!("\n.B {field}\n")) || PORTD_YAML.contains(&format!("\n.BR {field} ")),
                "portd.yaml(5) lacks {field}"
            );
        }
    }

    /// Each page formats without a warning from groff, when groff is there (lintian checks it too).
    #[test]
    fn pages_format_without_warnings() {
        let dir = std::env::temp_dir().join(format!("portctl-man-{}", std::process::id()));
        write(&dir, crate::cli::Cli::command()).expect("write pages");
        for (name, _) in pages(crate::cli::Cli::command()) {
            let o = match std::process::Command::new("groff").args(["-man", "-ww", "-z"]).arg(dir.join(name)).output() {
                Ok(o) => o,
                Err(e) => panic!("groff is needed to check the man pages (apt-get install groff-base): {e}"),
            };
            assert!(o.status.success() && o.stderr.is_empty(), "{name}: {}", String::from_utf8_lossy(&o.stderr));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
