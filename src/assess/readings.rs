//! From Prometheus readings to the engine's signals: each metric with its sample, rate-based
//! presets gated by `minRequestRate`. Shared by the evaluator and verification.

use std::collections::BTreeMap;

use super::{Sample, Signal, is_low_traffic};
use crate::{
    api::{EffectiveSettings, Preset, RollbackPolicySpec},
    prometheus::{Reading, plan::REQUEST_RATE_SIGNAL},
};

/// The policy's signals with their readings. Rate-based presets read as low traffic below
/// `minRequestRate`.
pub fn signals(
    spec: &RollbackPolicySpec,
    effective: &EffectiveSettings,
    readings: &BTreeMap<String, Reading>,
) -> Vec<Signal> {
    let rate = readings
        .get(REQUEST_RATE_SIGNAL)
        .and_then(|r| r.as_ref().ok().copied().flatten());
    effective
        .metrics
        .iter()
        .map(|metric| {
            let preset = spec
                .metrics
                .iter()
                .find(|m| m.name == metric.name)
                .and_then(|m| m.preset);
            let rate_based = matches!(preset, Some(Preset::ErrorRate | Preset::ResponseTime));
            let reading = readings
                .get(&metric.name)
                .cloned()
                .unwrap_or(Ok(None))
                .map_err(|e| e.to_string());
            let low = is_low_traffic(rate_based, rate, spec.min_request_rate);
            Signal {
                metric: metric.clone(),
                sample: Sample::from_query(reading, low),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        config::{OperatorConfig, effective},
        prometheus::QueryError,
    };

    fn spec() -> RollbackPolicySpec {
        crate::fixtures::policy("web")
            .with_min_request_rate(5.0)
            .with_metric("mem", crate::api::Preset::MemoryUsage)
            .spec
    }

    #[test]
    fn low_traffic_gates_only_rate_based_signals() {
        let spec = spec();
        let eff = effective(&spec, &OperatorConfig::defaults());
        let readings = BTreeMap::from([
            ("errors".to_string(), Ok(Some(0.5))),
            ("mem".to_string(), Ok(Some(0.95))),
            (REQUEST_RATE_SIGNAL.to_string(), Ok(Some(1.0))),
        ]);
        let signals = signals(&spec, &eff, &readings);
        assert_eq!(signals[0].sample, Sample::LowTraffic);
        assert_eq!(signals[1].sample, Sample::Value(0.95));
    }

    #[test]
    fn failed_and_missing_readings() {
        let spec = spec();
        let eff = effective(&spec, &OperatorConfig::defaults());
        let error = QueryError::Timeout {
            url: "http://p".into(),
            timeout: Duration::from_secs(1),
        };
        let readings = BTreeMap::from([("errors".to_string(), Err(error))]);
        let signals = signals(&spec, &eff, &readings);
        assert!(matches!(&signals[0].sample, Sample::Failed(m) if m.contains("did not answer")));
        assert_eq!(signals[1].sample, Sample::NoData);
    }
}
