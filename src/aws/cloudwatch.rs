//! CloudWatch: metric values (batched `GetMetricData`), alarm states, metric listings.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat, ScanBy};
use chrono::{DateTime, Utc};

use super::{Aws, Observed};
use crate::cloud::{AlarmState, AwsError, MetricQuery, Metrics};

/// CloudWatch's limits on one `GetMetricData` call.
pub(crate) const MAX_QUERIES_PER_CALL: usize = 500;
const MAX_DATAPOINTS_PER_CALL: u64 = 100_800;

impl Metrics for Aws {
    /// Latest value of each query over its recent window, in as few `GetMetricData` calls as
    /// the limits allow (500 queries and 100,800 datapoints a call). `None` = no datapoints.
    /// Also returns how many calls were made (pages included).
    async fn latest_values(
        &self,
        queries: &[MetricQuery<'_>],
        now: DateTime<Utc>,
    ) -> (Vec<Result<Option<f64>, AwsError>>, usize) {
        let mut out: Vec<Result<Option<f64>, AwsError>> = vec![Ok(None); queries.len()];
        let mut calls = 0usize;
        for batch in plan_batches(queries) {
            let window = batch.window;
            let start = crate::clock::before(now, window).unwrap_or(DateTime::<Utc>::MIN_UTC);
            let mut req = self
                .cloudwatch
                .get_metric_data()
                .start_time(aws_smithy_types::DateTime::from_millis(
                    start.timestamp_millis(),
                ))
                // A minute past now: a datapoint stamped this very second is included even where
                // the service rounds the end time down (CloudWatch returns nothing from the future).
                .end_time(aws_smithy_types::DateTime::from_millis(
                    now.timestamp_millis() + 60_000,
                ))
                .scan_by(ScanBy::TimestampDescending);
            for &i in &batch.indices {
                let q = &queries[i];
                let dims = q
                    .dimensions
                    .iter()
                    .map(|(k, v)| Dimension::builder().name(k).value(v).build());
                let metric = Metric::builder()
                    .namespace(q.namespace)
                    .metric_name(q.metric)
                    .set_dimensions(Some(dims.collect()))
                    .build();
                let stat = MetricStat::builder()
                    .metric(metric)
                    .period(q.period.as_secs().max(1) as i32)
                    .stat(q.statistic)
                    .build();
                req = req.metric_data_queries(
                    MetricDataQuery::builder()
                        .id(format!("q{i}"))
                        .metric_stat(stat)
                        .return_data(true)
                        .build(),
                );
            }
            let mut token: Option<String> = None;
            let mut found: HashMap<usize, (i64, f64)> = HashMap::new();
            let result: Result<(), AwsError> = async {
                loop {
                    calls += 1;
                    let resp = req
                        .clone()
                        .set_next_token(token.clone())
                        .send()
                        .observed("cloudwatch", "GetMetricData")
                        .await?;
                    for r in resp.metric_data_results() {
                        let Some(idx) = r
                            .id()
                            .and_then(|id| id.strip_prefix('q'))
                            .and_then(|n| n.parse::<usize>().ok())
                        else {
                            continue;
                        };
                        for (t, v) in r.timestamps().iter().zip(r.values()) {
                            let ms = t.to_millis().unwrap_or(0);
                            let e = found.entry(idx).or_insert((ms, *v));
                            if ms > e.0 {
                                *e = (ms, *v);
                            }
                        }
                    }
                    token = resp.next_token().map(str::to_string);
                    if token.is_none() {
                        return Ok(());
                    }
                }
            }
            .await;
            for &i in &batch.indices {
                out[i] = match &result {
                    Ok(()) => Ok(found.get(&i).map(|(_, v)| *v)),
                    Err(e) => Err(e.clone()),
                };
            }
        }
        (out, calls)
    }

    async fn alarm_states(
        &self,
        names: &[String],
    ) -> Result<HashMap<String, AlarmState>, AwsError> {
        // A state this build does not know is no data, as `INSUFFICIENT_DATA` is.
        let state = |s: &str| AlarmState::parse(s).unwrap_or(AlarmState::InsufficientData);
        let mut out = HashMap::new();
        for chunk in names.chunks(100) {
            let mut token: Option<String> = None;
            loop {
                let r = self
                    .cloudwatch
                    .describe_alarms()
                    .set_alarm_names(Some(chunk.to_vec()))
                    .set_next_token(token.clone())
                    .send()
                    .observed("cloudwatch", "DescribeAlarms")
                    .await?;
                for a in r.metric_alarms() {
                    if let (Some(n), Some(st)) = (a.alarm_name(), a.state_value()) {
                        out.insert(n.to_string(), state(st.as_str()));
                    }
                }
                for a in r.composite_alarms() {
                    if let (Some(n), Some(st)) = (a.alarm_name(), a.state_value()) {
                        out.insert(n.to_string(), state(st.as_str()));
                    }
                }
                token = r.next_token().map(str::to_string);
                if token.is_none() {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The dimension sets a metric exists with (`ListMetrics`; empty: no such metric in the
    /// namespace). At most a few pages.
    async fn metric_dimension_sets(
        &self,
        namespace: &str,
        metric: &str,
    ) -> Result<Vec<Vec<(String, String)>>, AwsError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..5 {
            let r = self
                .cloudwatch
                .list_metrics()
                .namespace(namespace)
                .metric_name(metric)
                .set_next_token(token.clone())
                .send()
                .observed("cloudwatch", "ListMetrics")
                .await?;
            for m in r.metrics() {
                let mut d: Vec<(String, String)> = m
                    .dimensions()
                    .iter()
                    .map(|d| {
                        (
                            d.name().unwrap_or_default().to_string(),
                            d.value().unwrap_or_default().to_string(),
                        )
                    })
                    .collect();
                d.sort();
                if !out.contains(&d) {
                    out.push(d);
                }
            }
            token = r.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        Ok(out)
    }
}

/// A group of queries for one `GetMetricData` call, with the window they share.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Batch {
    pub(crate) indices: Vec<usize>,
    pub(crate) window: Duration,
}

/// Packs queries into as few calls as CloudWatch allows: at most 500 queries and 100,800
/// datapoints per call, where each query over a window `W` returns about `W / period` points.
/// Each query's window is two of its periods, so the latest complete period is included.
pub(crate) fn plan_batches(queries: &[MetricQuery<'_>]) -> Vec<Batch> {
    let mut order: Vec<usize> = (0..queries.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(queries[i].period));
    let mut out: Vec<Batch> = Vec::new();
    let mut points = 0u64;
    for i in order {
        let p = queries[i].period.max(Duration::from_secs(1));
        let fits = out.last().map(|b| {
            let need = (b.window.as_secs() / p.as_secs()).max(1);
            b.indices.len() < MAX_QUERIES_PER_CALL && points + need <= MAX_DATAPOINTS_PER_CALL
        });
        if fits != Some(true) {
            out.push(Batch {
                indices: Vec::new(),
                window: p * 2,
            });
            points = 0;
        }
        if let Some(b) = out.last_mut() {
            points += (b.window.as_secs() / p.as_secs()).max(1);
            b.indices.push(i);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(period_s: u64) -> MetricQuery<'static> {
        MetricQuery {
            namespace: "n",
            metric: "m",
            dimensions: &[],
            statistic: "Average",
            period: Duration::from_secs(period_s),
        }
    }

    #[test]
    fn batches_at_the_500_limit() {
        let qs: Vec<_> = (0..10_000).map(|_| q(60)).collect();
        let b = plan_batches(&qs);
        assert_eq!(b.len(), 20);
        assert!(b.iter().all(|x| x.indices.len() == 500));
        let qs: Vec<_> = (0..501).map(|_| q(300)).collect();
        assert_eq!(plan_batches(&qs).len(), 2);
    }

    #[test]
    fn mixed_periods_share_calls_within_the_datapoint_limit() {
        // 1h and 1m periods: a 2h window gives 120 points per 1-minute query; 500 fit.
        let qs: Vec<_> = (0..1000)
            .map(|i| q(if i % 2 == 0 { 3600 } else { 60 }))
            .collect();
        let b = plan_batches(&qs);
        assert_eq!(b.len(), 2);
        // A 1-day period with 1-second periods cannot share: 172,800 points each.
        let qs = vec![q(86_400), q(1)];
        assert_eq!(plan_batches(&qs).len(), 2);
        let mut seen: Vec<usize> = plan_batches(&qs)
            .into_iter()
            .flat_map(|b| b.indices)
            .collect();
        seen.sort();
        assert_eq!(seen, [0, 1]);
    }
}
