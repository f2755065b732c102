//! `portd --check`: the daemon config validated offline, like `nginx -t`. Reads the file
//! and compiles its system set; touches neither the kernel nor any socket.

#![forbid(unsafe_code)]

use std::path::Path;
use std::process::ExitCode;

/// Reads and validates the config, and checks that the accounts it names exist; on
/// failure, one located problem per line.
pub fn load(path: &Path) -> Result<portd_rules::Config, Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![format!("{}: cannot read the config: {e}; pass the right file with --config", path.display())]
    })?;
    let file = path.display().to_string();
    let config =
        portd_rules::parse_config(&file, &text).map_err(|d| d.0.iter().map(|d| d.to_string()).collect::<Vec<_>>())?;
    let unknown = unknown_accounts(&file, &text, &config);
    if !unknown.is_empty() {
        return Err(unknown.0.iter().map(|d| d.to_string()).collect());
    }
    Ok(config)
}

/// Grants of users and groups the account database does not know, and a socket group
/// written in `text` that does not exist, located. A typo there would otherwise grant
/// nothing, or leave the socket in root's group. (The default group, `portd`, may be
/// absent where portd runs without its package: the socket then keeps its group, with a
/// warning at start.)
pub fn unknown_accounts(file: &str, text: &str, config: &portd_rules::Config) -> portd_rules::Diagnostics {
    use nix::unistd::{Group, User};
    let mut problems = Vec::new();
    let group_exists = |g: &str| Group::from_name(g).ok().flatten().is_some();
    let written = || portd_rules::load::writes(text, "settings.socket.group");
    if let Some(g) = config.settings.socket.group.as_deref().filter(|g| !group_exists(g) && written()) {
        problems.push((
            "settings.socket.group".to_string(),
            format!(
                "there is no group `{g}` on this host (see `getent group {g}`); the socket would stay in root's group: create it (`groupadd --system {g}`) or fix the name"
            ),
        ));
    }
    for (i, grant) in config.grants.iter().enumerate() {
        match &grant.subject {
            portd_rules::GrantSubject::User(u) if User::from_name(u).ok().flatten().is_none() => problems.push((
                format!("grants[{i}].user"),
                format!(
                    "there is no user `{u}` on this host (see `getent passwd {u}`); create it first or fix the name"
                ),
            )),
            portd_rules::GrantSubject::Group(g) if !group_exists(g) => problems.push((
                format!("grants[{i}].group"),
                format!(
                    "there is no group `{g}` on this host (see `getent group {g}`); create it first or fix the name"
                ),
            )),
            _ => {}
        }
    }
    portd_rules::load::locate(file, text, problems)
}

/// Validates the config at `path` (with `--table`, if given) and prints the verdict:
/// problems on stderr and exit 1, or a one-line summary on stdout and exit 0.
pub fn run(path: &Path, table: Option<&str>) -> ExitCode {
    let verdict = load(path).and_then(|mut config| {
        if let Some(t) = table {
            config.settings.table = t.to_string();
        }
        let system =
            portd_rules::OwnedSet { owner: portd_rules::plan::SYSTEM_OWNER.into(), forwards: config.forwards.clone() };
        portd_rules::compile(&config.settings.table, config.settings.mark, &[system])
            .map_err(|c| c.iter().map(|c| format!("{}: {c}", path.display())).collect::<Vec<_>>())?;
        Ok(config)
    });
    match verdict {
        Ok(c) => {
            println!(
                "{}: ok: table inet {}, socket {}, {} grant(s), {} system forward(s)",
                path.display(),
                c.settings.table,
                c.settings.socket.path,
                c.grants.len(),
                c.forwards.len()
            );
            ExitCode::SUCCESS
        }
        Err(lines) => {
            for l in &lines {
                eprintln!("{l}");
            }
            eprintln!("{}: {} problem(s); portd would refuse to start with it", path.display(), lines.len());
            ExitCode::FAILURE
        }
    }
}
