//! A one-line description of the machine, for benchmark and measurement reports (results are
//! written down with the machine they were measured on).

/// CPU model (from `/proc/cpuinfo` where readable), hardware threads, rayon's pool size and
/// the load average (from `/proc/loadavg` where readable), e.g. `AMD EPYC 7B13, 2 hardware
/// threads, 2 rayon threads, load average 1.03 1.70 1.73, linux`.
pub fn description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into());
    format!(
        "{cpu}, {} hardware threads, {} rayon threads, load average {load}, {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        rayon::current_num_threads(),
        std::env::consts::OS
    )
}
