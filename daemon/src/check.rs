//! `portd --check`: the daemon config validated offline, like `nginx -t`. Reads the file
//! and compiles its system set; touches neither the kernel nor any socket.

use std::path::Path;
use std::process::ExitCode;

/// Reads and validates the config; on failure, one located problem per line.
pub fn load(path: &Path) -> Result<portd_rules::Config, Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![format!("{}: cannot read the config: {e}; pass the right file with --config", path.display())]
    })?;
    portd_rules::parse_config(&path.display().to_string(), &text)
        .map_err(|d| d.0.iter().map(|d| d.to_string()).collect())
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
