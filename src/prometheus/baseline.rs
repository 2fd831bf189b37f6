//! The baseline judge's reads for the live controller: for each metric with a `baseline`, while
//! the target's latest release is at most `window` old, one range query of the metric's
//! rendered query over `[release - window, now]` at the policy's interval, judged by
//! [`crate::assess::baseline`] (the same judge the backtest replays history through).

use std::{collections::BTreeMap, time::Duration};

use jiff::Timestamp;

use super::{
    RangeSource,
    template::{self, Vars},
};
use crate::{
    api::{Direction, MetricSpec},
    assess::baseline::{self, BaselineSettings, BaselineVerdict},
};

/// Verdicts by metric name for the metrics whose judge looks now. A metric whose query fails
/// gets none (its threshold verdict stands alone); the failure is logged.
pub async fn judge_metrics<S: RangeSource>(
    source: &S,
    metrics: &[MetricSpec],
    workload_label: &str,
    vars: &Vars<'_>,
    release: Option<Timestamp>,
    now: Timestamp,
    interval: Duration,
) -> BTreeMap<String, BaselineVerdict> {
    let mut verdicts = BTreeMap::new();
    let Some(release) = release else {
        return verdicts;
    };
    for metric in metrics {
        let Some(spec) = &metric.baseline else {
            continue;
        };
        let Ok((window, settings)) = BaselineSettings::from_spec(spec, interval) else {
            continue;
        };
        let since = now.duration_since(release);
        if since.is_negative() || since.as_secs_f64() > window.as_secs_f64() {
            continue;
        }
        let Some(promql) = template::metric_template(metric, workload_label)
            .and_then(|t| template::render(&t, vars).ok())
        else {
            continue;
        };
        let Ok(start) = release.checked_sub(window) else {
            continue;
        };
        match source.query_range(&promql, start, now, interval).await {
            Ok(series) => {
                // The query returns one number; with several series the verdict would be
                // ambiguous, so none is given (the threshold verdict reports the shape).
                let [one] = series.as_slice() else {
                    continue;
                };
                let direction = metric.direction.unwrap_or(Direction::Above);
                if let Some(v) = baseline::judge_series(
                    &one.points,
                    Some(release),
                    now,
                    window,
                    direction,
                    &settings,
                ) {
                    verdicts.insert(metric.name.clone(), v);
                }
            }
            Err(error) => {
                tracing::debug!(metric = %metric.name, %error, "baseline range query failed")
            }
        }
    }
    verdicts
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::prometheus::{QueryError, Series};

    /// Answers every range query with 60 ms before `release` and 240 ms after, one point a step.
    struct Shifted {
        release: Timestamp,
        asked: Mutex<Vec<(String, i64, i64)>>,
    }

    impl RangeSource for Shifted {
        async fn query_range(
            &self,
            promql: &str,
            start: Timestamp,
            end: Timestamp,
            step: Duration,
        ) -> Result<Vec<Series>, QueryError> {
            self.asked.lock().unwrap().push((
                promql.to_owned(),
                start.as_second(),
                end.as_second(),
            ));
            let mut points = vec![];
            let mut t = start;
            while t <= end {
                points.push((t, if t < self.release { 60.0 } else { 240.0 }));
                t = t.checked_add(step).unwrap();
            }
            Ok(vec![Series {
                labels: BTreeMap::new(),
                points,
            }])
        }
    }

    #[tokio::test]
    async fn judges_only_metrics_with_a_baseline_within_its_window() {
        let metrics: Vec<MetricSpec> = yaml_serde::from_str(
            r#"
- {name: latency, query: 'max(p95{namespace="{{ namespace }}"})', critical: 2000, baseline: {window: 10m}}
- {name: errors, preset: errorRate}
"#,
        )
        .unwrap();
        let release = Timestamp::from_second(1_700_000_000).unwrap();
        let source = Shifted {
            release,
            asked: Mutex::default(),
        };
        let vars = Vars {
            namespace: "shop",
            target: "web",
            pod_regex: None,
            window: Duration::from_secs(60),
        };
        let now = release.checked_add(Duration::from_secs(300)).unwrap();
        let step = Duration::from_secs(30);
        let v = judge_metrics(&source, &metrics, "app", &vars, Some(release), now, step).await;
        assert_eq!(v.keys().collect::<Vec<_>>(), ["latency"]);
        assert!(v["latency"].is_regression(), "{:?}", v["latency"]);
        let asked = source.asked.lock().unwrap().clone();
        assert_eq!(
            asked,
            [(
                r#"max(p95{namespace="shop"})"#.to_string(),
                release.as_second() - 600,
                now.as_second()
            )]
        );
        // Past the window the judge no longer looks, and without a release it never does.
        let late = release.checked_add(Duration::from_secs(601)).unwrap();
        assert!(
            judge_metrics(&source, &metrics, "app", &vars, Some(release), late, step)
                .await
                .is_empty()
        );
        assert!(
            judge_metrics(&source, &metrics, "app", &vars, None, now, step)
                .await
                .is_empty()
        );
    }
}
