//! History for a backtest: the policy's queries planned as the evaluator plans them, each run as
//! range queries (in chunks Prometheus accepts), then cut into one instant result per
//! evaluation time and routed to signals by the planner's own `distribute`: each time's
//! readings are what the evaluator would have read at that time.

use std::{collections::BTreeMap, collections::HashMap, time::Duration};

use jiff::Timestamp;

use crate::prometheus::{self, PolicyQueries, QueryError, RangeSource, Reading, Sample};

/// Prometheus refuses more than 11,000 points per series and query; stay below.
const MAX_POINTS_PER_QUERY: i64 = 10_000;

/// Readings at each evaluation time, oldest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    pub times: Vec<Timestamp>,
    /// Per time, by signal name (the request-rate signal included), as the evaluator has them.
    pub readings: Vec<BTreeMap<String, Reading>>,
}

/// Evaluation times from `from` to `to`, on multiples of `step` (as the evaluator aligns its
/// ticks to the interval on the wall clock).
pub fn times(from: Timestamp, to: Timestamp, step: Duration) -> Vec<Timestamp> {
    let step_ms = (step.as_millis() as i64).max(1000);
    let first = from.as_millisecond().div_euclid(step_ms) * step_ms;
    let first = if first < from.as_millisecond() {
        first + step_ms
    } else {
        first
    };
    (0..)
        .map(|k| first + k * step_ms)
        .take_while(|&ms| ms <= to.as_millisecond())
        .filter_map(|ms| Timestamp::from_millisecond(ms).ok())
        .collect()
}

/// Reads the history of one policy's signals (`queries.policy` names it; the endpoint is
/// unused: one source answers everything).
pub async fn fetch<S: RangeSource>(
    source: &S,
    queries: &PolicyQueries<String, ()>,
    from: Timestamp,
    to: Timestamp,
    step: Duration,
) -> History {
    let times = times(from, to, step);
    let plan = prometheus::plan(std::slice::from_ref(queries));
    // Per query: the instant result at each time (by millisecond), or the error of its chunk.
    let mut at: Vec<HashMap<i64, Result<Vec<Sample>, QueryError>>> = vec![];
    for query in plan.queries() {
        let mut results: HashMap<i64, Result<Vec<Sample>, QueryError>> = HashMap::new();
        for chunk in times.chunks(MAX_POINTS_PER_QUERY as usize) {
            let (start, end) = (chunk[0], chunk[chunk.len() - 1]);
            match source.query_range(&query.promql, start, end, step).await {
                Ok(series) => {
                    for t in chunk {
                        results.insert(t.as_millisecond(), Ok(vec![]));
                    }
                    for s in series {
                        for (t, v) in s.points {
                            if let Some(Ok(samples)) = results.get_mut(&t.as_millisecond()) {
                                samples.push(Sample {
                                    labels: s.labels.clone(),
                                    value: v,
                                });
                            }
                        }
                    }
                }
                Err(e) => {
                    for t in chunk {
                        results.insert(t.as_millisecond(), Err(e.clone()));
                    }
                }
            }
        }
        at.push(results);
    }
    let readings = times
        .iter()
        .map(|t| {
            let ms = t.as_millisecond();
            let results: Vec<_> = at
                .iter()
                .map(|r| r.get(&ms).cloned().unwrap_or(Ok(vec![])))
                .collect();
            let mut own = plan
                .distribute(&results)
                .remove(&queries.policy)
                .unwrap_or_default();
            for s in &queries.signals {
                own.entry(s.name.clone()).or_insert(Ok(None));
            }
            own
        })
        .collect();
    History { times, readings }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::prometheus::{Series, Signal};

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn times_are_aligned_to_the_step() {
        let ts = times(t(95), t(200), Duration::from_secs(30));
        assert_eq!(
            ts.iter().map(|t| t.as_second()).collect::<Vec<_>>(),
            [120, 150, 180]
        );
    }

    /// A series per query whose value is the time in seconds; one range call recorded each.
    struct Clock(Mutex<Vec<(i64, i64)>>);

    impl RangeSource for Clock {
        async fn query_range(
            &self,
            promql: &str,
            start: Timestamp,
            end: Timestamp,
            step: Duration,
        ) -> Result<Vec<Series>, QueryError> {
            self.0
                .lock()
                .unwrap()
                .push((start.as_second(), end.as_second()));
            if promql.contains("broken") {
                return Err(QueryError::BadQuery {
                    message: "nope".into(),
                });
            }
            let mut points = vec![];
            let mut at = start;
            while at <= end {
                points.push((at, at.as_second() as f64));
                at = at.checked_add(step).unwrap();
            }
            Ok(vec![Series {
                labels: BTreeMap::new(),
                points,
            }])
        }
    }

    #[tokio::test]
    async fn readings_per_time_in_chunks_prometheus_accepts() {
        let queries = PolicyQueries {
            policy: "shop/web".to_string(),
            endpoint: (),
            namespace: "shop".into(),
            target: "web".into(),
            pod_regex: None,
            window: Duration::from_secs(60),
            signals: vec![
                Signal {
                    name: "clock".into(),
                    template: "max(up)".into(),
                },
                Signal {
                    name: "bad".into(),
                    template: "max(broken)".into(),
                },
            ],
        };
        let source = Clock(Mutex::default());
        let step = Duration::from_secs(1);
        let h = fetch(&source, &queries, t(0), t(25_000), step).await;
        assert_eq!(h.times.len(), 25_001);
        assert_eq!(h.readings[7]["clock"], Ok(Some(7.0)));
        assert_eq!(h.readings[24_999]["clock"], Ok(Some(24_999.0)));
        assert!(h.readings[3]["bad"].is_err());
        // 3 chunks of at most 10,000 points for each of the two queries.
        let calls = source.0.lock().unwrap().clone();
        assert_eq!(calls.len(), 6, "{calls:?}");
        assert!(calls.iter().all(|(s, e)| e - s < MAX_POINTS_PER_QUERY));
    }
}
