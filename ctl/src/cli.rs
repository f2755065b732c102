//! The command line of portctl: one derive `Parser`, doc comments become `--help`.

use clap::{Parser, Subcommand, ValueEnum};
use clap_complete::engine::ArgValueCandidates;
use std::path::PathBuf;

/// The daemon's socket when neither `--socket` nor PORTD_SOCKET says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/portd/portd.sock";

/// Control portd: apply port forwards from YAML, inspect and change them.
#[derive(Debug, Parser)]
#[command(name = "portctl", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Control socket of the daemon.
    #[arg(long, global = true, env = "PORTD_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,

    /// Print data as JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Cmd,
}

/// `--proto` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ProtoArg {
    /// TCP only
    Tcp,
    /// UDP only
    Udp,
    /// TCP and UDP
    Both,
}

/// `--family` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FamilyArg {
    /// IPv4 only
    Ipv4,
    /// IPv6 only
    Ipv6,
    /// IPv4 and IPv6
    Both,
}

/// Shells for `completions`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ShellArg {
    /// bash
    Bash,
    /// zsh
    Zsh,
    /// fish
    Fish,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Validate a rules file offline; every problem is printed with its location.
    Check {
        /// Rules file (YAML).
        file: PathBuf,
    },
    /// Print the nftables ruleset a rules file compiles to (offline).
    Plan {
        /// Rules file (YAML).
        file: PathBuf,
        /// Table name to render.
        #[arg(long, default_value = "portd")]
        table: String,
        /// Default mark for forwards without `mark:`.
        #[arg(long, default_value = "0x1", value_parser = parse_mark)]
        mark: u32,
        /// How TCP forwards reach their target: `steer` (portd's choice wherever the
        /// kernel runs its BPF data plane: the targets go to fwd_steer, no NAT rule) or
        /// `nat` (redirect rules; UDP forwards always use them).
        #[arg(long, default_value = "steer", value_parser = ["steer", "nat"])]
        dispatch: String,
        /// Render for a host where another program's rules run conntrack (a firewall's
        /// `ct state`): a steer plan then untracks steered connections in raw chains.
        /// portd finds this out itself; without it, steered packets pass no raw chain.
        #[arg(long)]
        conntrack: bool,
    },
    /// Replace your set of forwards with those of FILE and print what changed.
    Apply {
        /// Rules file (YAML); `-` reads standard input.
        file: PathBuf,
        /// Show what would change without applying it.
        #[arg(long)]
        dry_run: bool,
        /// Act for another owner (`user:NAME` or NAME; root only).
        #[arg(long, value_parser = crate::owner::parse_existing, add = ArgValueCandidates::new(crate::complete::owners))]
        owner: Option<String>,
    },
    /// Show what `apply FILE` would change (same as `apply --dry-run`).
    Diff {
        /// Rules file (YAML); `-` reads standard input.
        file: PathBuf,
        /// Compare against another owner's set (`user:NAME` or NAME; root only).
        #[arg(long, value_parser = crate::owner::parse_existing, add = ArgValueCandidates::new(crate::complete::owners))]
        owner: Option<String>,
        /// Exit 1 when changes are pending and 0 when there are none, like `git diff
        /// --exit-code` (errors keep their own codes: 1, 2, 3, 4).
        #[arg(long)]
        exit_code: bool,
    },
    /// Daemon state and forwards with owner and counters (all, or those named).
    Status {
        /// Only forwards with these names (of any owner); a name that matches none is an error.
        #[arg(add = ArgValueCandidates::new(crate::complete::all_forward_names))]
        names: Vec<String>,
        /// Only forwards of this owner (`system`, `user:NAME`, or a user's bare NAME).
        #[arg(long, value_parser = crate::owner::parse, add = ArgValueCandidates::new(crate::complete::owners))]
        owner: Option<String>,
        /// Only forwards whose public port (or range) includes this port.
        #[arg(long, value_name = "PORT")]
        port: Option<u16>,
        /// Also show mark, local, protect, interfaces, sources and description.
        #[arg(long, short = 'w')]
        wide: bool,
    },
    /// Add one forward to your set.
    Add {
        /// Forward name.
        name: String,
        /// Public port or range (80, 8000-8099).
        port: String,
        /// Local target port or range of the same length.
        to: String,
        /// Transport protocol.
        #[arg(long, value_enum, default_value = "tcp")]
        proto: ProtoArg,
        /// Address family.
        #[arg(long, value_enum, default_value = "both")]
        family: FamilyArg,
        /// Do not redirect this host's own connections.
        #[arg(long)]
        no_local: bool,
        /// Only traffic arriving on this interface (repeatable).
        #[arg(long = "interface")]
        interfaces: Vec<String>,
        /// Only traffic from this network (repeatable).
        #[arg(long = "source")]
        sources: Vec<String>,
        /// Packet mark (default: the daemon's).
        #[arg(long)]
        mark: Option<String>,
        /// Refuse direct connections to the target port from other hosts.
        #[arg(long)]
        protect: bool,
        /// Free text shown by `status --wide` and `export` (at most 200 characters).
        #[arg(long)]
        description: Option<String>,
        /// Show what would change without applying it.
        #[arg(long)]
        dry_run: bool,
        /// When a forward of this name exists, change it to this definition, in one
        /// kernel batch (without it, a different forward of the same name is refused; an
        /// identical one is left as it is, exit 0).
        #[arg(long)]
        replace: bool,
        /// Act for another owner (`user:NAME` or NAME; root only).
        #[arg(long, value_parser = crate::owner::parse_existing, add = ArgValueCandidates::new(crate::complete::owners))]
        owner: Option<String>,
    },
    /// Remove one forward from your set.
    Remove {
        /// Forward name.
        #[arg(add = ArgValueCandidates::new(crate::complete::my_forward_names))]
        name: String,
        /// Show what would change without applying it.
        #[arg(long)]
        dry_run: bool,
        /// Exit 0 when the set has no such forward (nothing to remove).
        #[arg(long)]
        if_exists: bool,
        /// Act for another owner (`user:NAME` or NAME; root only).
        #[arg(long, value_parser = crate::owner::parse, add = ArgValueCandidates::new(crate::complete::owners))]
        owner: Option<String>,
    },
    /// Print a set as YAML that `apply` accepts.
    Export {
        /// Owner to export (`system`, `user:NAME`; default: yours).
        #[arg(long, value_parser = crate::owner::parse, add = ArgValueCandidates::new(crate::complete::owners))]
        owner: Option<String>,
    },
    /// Make the daemon re-read its config file (root); print what was added, removed and
    /// suspended, per owner.
    Reload {
        /// Show what the config on disk would add, remove and suspend, without applying it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show what you may forward: the grants that name you or one of your groups (public
    /// ports, targets, protect, local, marks, quota).
    Grants,
    /// Print the Prometheus exposition (text format 0.0.4), for node_exporter's textfile
    /// collector.
    Metrics,
    /// Find why traffic of a forward may not arrive (other firewalls, NAT, legacy
    /// iptables, listeners, conntrack, portd itself) and print the fix; exits 1 when a
    /// finding is an error.
    Doctor {
        /// Only the findings about forwards with these names (of any owner), and those
        /// about no forward in particular.
        #[arg(add = ArgValueCandidates::new(crate::complete::all_forward_names))]
        names: Vec<String>,
        /// Only the findings about forwards of this owner (`system`, `user:NAME`, or a
        /// user's bare NAME), and those about no forward in particular.
        #[arg(long, value_parser = crate::owner::parse, add = ArgValueCandidates::new(crate::complete::owners))]
        owner: Option<String>,
    },
    /// Print shell completions.
    Completions {
        /// Shell.
        #[arg(value_enum)]
        shell: ShellArg,
    },
    /// Write the manual pages portctl.1, portd.8 and portd.yaml.5 into DIR.
    Man {
        /// Output directory.
        dir: PathBuf,
    },
}

/// A mark as written in rules files: decimal or `0x` hexadecimal, 32 bits.
pub fn parse_mark(s: &str) -> Result<u32, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("`{s}` is not a 32-bit mark (0 to 0xffffffff)"))
}
