//! What the benchmark reads: the control plane's request log, /proc, /metrics pages, and
//! percentiles.

use std::collections::BTreeMap;
use std::io::{BufRead, Seek, SeekFrom};
use std::path::Path;

use jiff::Timestamp;

/// One line of the control plane's request log (`$FRYS_REQUEST_LOG`).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub time: Timestamp,
    pub user_agent: String,
    pub verb: String,
    pub resource: String,
    #[serde(default)]
    pub subresource: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub name: String,
    pub code: u16,
}

/// Reads the request log from a byte offset; returns the requests and the new offset.
pub fn read_requests(path: &Path, from: u64) -> std::io::Result<(Vec<Request>, u64)> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(from.min(len)))?;
    let mut reader = std::io::BufReader::new(file);
    let mut out = vec![];
    let mut offset = from.min(len);
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line)?;
        // A line still being written is read next time.
        if n == 0 || !line.ends_with('\n') {
            break;
        }
        offset += n as u64;
        if let Ok(r) = serde_json::from_str::<Request>(&line) {
            out.push(r);
        }
    }
    Ok((out, offset))
}

/// Size of the request log now (the start of a window).
pub fn log_offset(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// A request's verb as people say it, with the subresource: `patch status`, `watch`, `list`.
pub fn verb_key(r: &Request) -> String {
    if r.subresource.is_empty() {
        format!("{} {}", r.verb, r.resource)
    } else {
        format!("{} {}/{}", r.verb, r.resource, r.subresource)
    }
}

/// Counts by verb and resource.
pub fn count_by_verb<'a>(requests: impl Iterator<Item = &'a Request>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in requests {
        *m.entry(verb_key(r)).or_default() += 1;
    }
    m
}

/// CPU seconds (user + system) a process has used, from /proc/PID/stat.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(") ")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime) are 12 and 13 after the command.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks())
}

fn clock_ticks() -> f64 {
    // sysconf(_SC_CLK_TCK) is 100 on every Linux the project runs on.
    100.0
}

/// (VmRSS, VmHWM) in MB, from /proc/PID/status.
pub fn memory_mb(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| -> Option<f64> {
        status
            .lines()
            .find(|l| l.starts_with(key))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((kb("VmRSS:")? / 1024.0, kb("VmHWM:")? / 1024.0))
}

/// Sum of every sample of `metric` (any labels) on a Prometheus exposition page, optionally
/// only samples whose labels contain `label_filter`.
pub fn sum_metric(page: &str, metric: &str, label_filter: Option<&str>) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| label_filter.is_none_or(|f| l.contains(f)))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// The values of a metric's series whose label set (`{...}`) passes `keep`.
pub fn metric_values(page: &str, metric: &str, keep: impl Fn(&str) -> bool) -> Vec<f64> {
    page.lines()
        .filter_map(|l| l.strip_prefix(metric)?.strip_prefix('{'))
        .filter_map(|rest| rest.split_once("} "))
        .filter(|(labels, _)| keep(labels))
        .filter_map(|(_, value)| value.trim().parse::<f64>().ok())
        .collect()
}

/// The p-th percentile (0-100) by nearest rank; None when empty.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&[3.0], 99.0), Some(3.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn sums_a_metric_over_labels() {
        let page = "# HELP x\nfrys_q_total{outcome=\"ok\"} 3\nfrys_q_total{outcome=\"error\"} 1\nfrys_q_total_other 9\n";
        assert_eq!(sum_metric(page, "frys_q_total", None), 4.0);
        assert_eq!(sum_metric(page, "frys_q_total", Some("ok")), 3.0);
    }

    #[test]
    fn reads_the_values_of_chosen_series() {
        let page = "# TYPE g gauge\ng{policy_namespace=\"a\",policy=\"w\"} 1.5\ng{policy_namespace=\"b\",policy=\"w\"} 2\ng_other{policy_namespace=\"a\"} 9\n";
        assert_eq!(metric_values(page, "g", |l| l.contains("\"a\"")), [1.5]);
        assert_eq!(metric_values(page, "g", |_| true), [1.5, 2.0]);
    }

    #[test]
    fn reads_request_log_lines() {
        let dir = std::env::temp_dir().join(format!("frys-bench-test-{}", std::process::id()));
        std::fs::write(&dir, "{\"time\":\"2026-12-01T20:00:00.123Z\",\"userAgent\":\"frys-rollback/0.1.0\",\"verb\":\"patch\",\"resource\":\"rollbackpolicies\",\"subresource\":\"status\",\"namespace\":\"a\",\"name\":\"w\",\"code\":200}\n{\"partial").unwrap();
        let (r, off) = read_requests(&dir, 0).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(verb_key(&r[0]), "patch rollbackpolicies/status");
        assert!(off > 0);
    }
}
