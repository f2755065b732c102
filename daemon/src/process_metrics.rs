//! The standard `process_*` metrics of the Prometheus client libraries, from /proc/self
//! (and the boot time in /proc/stat), read at each scrape. A file that cannot be read
//! leaves its metrics out rather than reporting a wrong value.

#![forbid(unsafe_code)]

/// Clock ticks per second of /proc's times (`USER_HZ`): 100 on every Linux architecture,
/// as the Prometheus clients' procfs readers assume too.
const USER_HZ: f64 = 100.0;

/// What one read of /proc gives.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Process {
    /// Resident set size, bytes (`VmRSS`).
    pub resident_memory_bytes: Option<u64>,
    /// Open file descriptors (entries of /proc/self/fd).
    pub open_fds: Option<u64>,
    /// Soft limit of open file descriptors (`Max open files`).
    pub max_fds: Option<u64>,
    /// Start time, seconds since the epoch.
    pub start_time_seconds: Option<f64>,
    /// User and system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
}

/// Reads this process's figures.
pub fn read() -> Process {
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    let times = stat.as_deref().and_then(parse_stat);
    let btime = std::fs::read_to_string("/proc/stat").ok().as_deref().and_then(parse_btime);
    Process {
        resident_memory_bytes: std::fs::read_to_string("/proc/self/status").ok().as_deref().and_then(parse_rss),
        // The directory's own handle, open while it is read, is not counted.
        open_fds: std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count().saturating_sub(1) as u64),
        max_fds: std::fs::read_to_string("/proc/self/limits").ok().as_deref().and_then(parse_max_fds),
        start_time_seconds: times.zip(btime).map(|(t, b)| b as f64 + t.start_ticks as f64 / USER_HZ),
        cpu_seconds: times.map(|t| (t.utime + t.stime) as f64 / USER_HZ),
    }
}

/// The fields of /proc/PID/stat used here, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Times {
    utime: u64,
    stime: u64,
    start_ticks: u64,
}

/// /proc/PID/stat: fields after the command name (which may hold spaces and parentheses,
/// so the split is at the last `)`); utime, stime and starttime are fields 14, 15 and 22.
fn parse_stat(s: &str) -> Option<Times> {
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    let at = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(Times { utime: at(14)?, stime: at(15)?, start_ticks: at(22)? })
}

fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kb: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kb * 1024)
}

fn parse_btime(stat: &str) -> Option<u64> {
    stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()
}

fn parse_max_fds(limits: &str) -> Option<u64> {
    let line = limits.lines().find_map(|l| l.strip_prefix("Max open files"))?;
    line.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_proc_files() {
        let stat =
            "29477 (a (b) c) R 29475 29475 6159 0 -1 4194304 99 0 0 0 250 50 0 0 20 0 1 0 443431 3133440 412 1844";
        assert_eq!(parse_stat(stat), Some(Times { utime: 250, stime: 50, start_ticks: 443431 }));
        assert_eq!(parse_stat("1 (x) R 1 2"), None);
        assert_eq!(parse_rss("Name:\tportd\nVmRSS:\t    2176 kB\n"), Some(2176 * 1024));
        assert_eq!(parse_rss("Name:\tkthread\n"), None);
        assert_eq!(parse_btime("cpu  1 2 3\nbtime 1796528978\n"), Some(1796528978));
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \nMax open files            1024                 524288               files     \n";
        assert_eq!(parse_max_fds(limits), Some(1024));
    }

    #[test]
    fn reads_this_process() {
        let p = read();
        let rss = p.resident_memory_bytes.expect("VmRSS");
        assert!(rss > 1 << 20, "a test binary holds more than 1 MiB: {rss}");
        let _f = std::fs::File::open("/proc/self/stat").expect("open");
        let with_one_more = read().open_fds.expect("fds");
        assert!(with_one_more >= 4, "stdin, stdout, stderr and the file: {with_one_more}");
        let start = p.start_time_seconds.expect("start time");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64();
        assert!(start <= now + 1.0 && start > now - 3600.0, "started within the hour: {start} vs {now}");
        assert!(p.cpu_seconds.expect("cpu") >= 0.0);
        assert!(p.max_fds.expect("limit") >= with_one_more);
    }
}
