//! Prometheus metrics (prometheus-client): one registry for the process, reached through
//! `metrics::get()`, so logs, metrics and notifications are recorded at the same places.

use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::TypedMetric;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CheckL {
    pub check: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RuleL {
    pub rule: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SuppressL {
    pub rule: String,
    pub reason: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RunL {
    pub kind: String,
    pub target: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AwsL {
    pub service: String,
    pub operation: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AwsErrL {
    pub service: String,
    pub operation: String,
    pub code: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct NotifyL {
    pub notifier: String,
    pub event: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct GateL {
    pub gate: String,
    pub decision: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OperationL {
    pub operation: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ApplyL {
    pub pipeline: String,
    pub result: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PipelineL {
    pub pipeline: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DeployL {
    pub endpoint: String,
    pub result: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct EndpointL {
    pub endpoint: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultL {
    pub result: String,
}

type FGauge = Gauge<f64, AtomicU64>;

fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

fn lateness() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

pub(crate) struct Metrics {
    pub registry: Registry,
    /// (name, help, type) of every family, in registration order.
    described: Vec<(String, String, String)>,
    pub reloads: Family<ResultL, Counter>,
    pub last_reload_ok: Gauge,
    pub last_reload_success_ts: FGauge,
    pub check_evaluations: Family<CheckL, Counter>,
    pub check_breaches: Family<CheckL, Counter>,
    pub check_value: Family<CheckL, FGauge>,
    pub check_threshold: Family<CheckL, FGauge>,
    pub check_breaching: Family<CheckL, Gauge>,
    pub check_errors: Family<CheckL, Counter>,
    pub rule_firings: Family<RuleL, Counter>,
    pub rule_suppressions: Family<SuppressL, Counter>,
    pub runs_started: Family<RunL, Counter>,
    pub runs_succeeded: Family<RunL, Counter>,
    pub runs_failed: Family<RunL, Counter>,
    pub runs_active: Family<RunL, Gauge>,
    pub aws_requests: Family<AwsL, Counter>,
    pub aws_errors: Family<AwsErrL, Counter>,
    pub aws_latency: Family<AwsL, Histogram, fn() -> Histogram>,
    pub notifications_sent: Family<NotifyL, Counter>,
    pub notifications_deduplicated: Family<NotifyL, Counter>,
    pub notifications_failed: Family<NotifyL, Counter>,
    pub gate_decisions: Family<GateL, Counter>,
    pub state_errors: Family<OperationL, Counter>,
    pub events: Family<ResultL, Counter>,
    pub events_queue_up: Gauge,
    pub pipeline_applies: Family<ApplyL, Counter>,
    pub pipeline_in_sync: Family<PipelineL, Gauge>,
    pub deployments: Family<DeployL, Counter>,
    pub endpoint_version: Family<EndpointL, Gauge>,
    pub preflight_problems: Gauge,
    /// 1 while this replica leads (HA), 0 as a standby; 1 on a single machine.
    pub leader: Gauge,
    pub schedule_lateness: Histogram,
    pub up_since: FGauge,
}

/// The registry, remembering each family's name, help and type: /metrics describes every
/// family from the start (prometheus-client leaves out a family with no series yet), so a
/// dashboard or an alert names a metric the scrape shows before its first sample.
struct Reg {
    r: Registry,
    described: Vec<(String, String, String)>,
}

impl Reg {
    fn register<M: prometheus_client::registry::Metric + TypedMetric>(
        &mut self,
        name: &str,
        help: &str,
        metric: M,
    ) {
        self.described
            .push((name.into(), help.into(), M::TYPE.as_str().into()));
        self.r.register(name, help, metric);
    }
}

impl Metrics {
    fn new() -> Metrics {
        let mut r = Reg {
            r: Registry::default(),
            described: Vec::new(),
        };
        let m = Metrics {
            reloads: Family::default(),
            last_reload_ok: Gauge::default(),
            last_reload_success_ts: FGauge::default(),
            check_evaluations: Family::default(),
            check_breaches: Family::default(),
            check_value: Family::default(),
            check_threshold: Family::default(),
            check_breaching: Family::default(),
            check_errors: Family::default(),
            rule_firings: Family::default(),
            rule_suppressions: Family::default(),
            runs_started: Family::default(),
            runs_succeeded: Family::default(),
            runs_failed: Family::default(),
            runs_active: Family::default(),
            aws_requests: Family::default(),
            aws_errors: Family::default(),
            aws_latency: Family::new_with_constructor(latency),
            notifications_sent: Family::default(),
            notifications_deduplicated: Family::default(),
            notifications_failed: Family::default(),
            gate_decisions: Family::default(),
            state_errors: Family::default(),
            events: Family::default(),
            events_queue_up: Gauge::default(),
            pipeline_applies: Family::default(),
            pipeline_in_sync: Family::default(),
            deployments: Family::default(),
            endpoint_version: Family::default(),
            preflight_problems: Gauge::default(),
            leader: Gauge::default(),
            schedule_lateness: lateness(),
            up_since: FGauge::default(),
            registry: Registry::default(),
            described: Vec::new(),
        };
        m.register_config(&mut r);
        m.register_checks(&mut r);
        m.register_runs(&mut r);
        m.register_aws(&mut r);
        m.register_notify(&mut r);
        m.register_other(&mut r);
        Metrics {
            registry: r.r,
            described: r.described,
            ..m
        }
    }

    /// Config loads and reloads.
    fn register_config(&self, r: &mut Reg) {
        r.register(
            "mlopsd_config_reloads",
            "Config reloads by result (success, failure)",
            self.reloads.clone(),
        );
        r.register(
            "mlopsd_config_last_reload_successful",
            "1 if the last start or reload applied the config, 0 if it was rejected",
            self.last_reload_ok.clone(),
        );
        r.register(
            "mlopsd_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful load or reload",
            self.last_reload_success_ts.clone(),
        );
    }

    /// Checks, rules and the schedule.
    fn register_checks(&self, r: &mut Reg) {
        r.register(
            "mlopsd_check_evaluations",
            "Check evaluations",
            self.check_evaluations.clone(),
        );
        r.register(
            "mlopsd_check_breaches",
            "Evaluations that breached the threshold",
            self.check_breaches.clone(),
        );
        r.register(
            "mlopsd_check_errors",
            "Reads of a check that failed (a report missing, unreadable, not JSON, too large, denied; an AWS error)",
            self.check_errors.clone(),
        );
        r.register(
            "mlopsd_check_value",
            "Last value read for a check",
            self.check_value.clone(),
        );
        r.register(
            "mlopsd_check_threshold",
            "A check's threshold",
            self.check_threshold.clone(),
        );
        r.register(
            "mlopsd_check_breaching",
            "1 while a check is in a breach incident (for consecutive breaches reached)",
            self.check_breaching.clone(),
        );
        r.register(
            "mlopsd_rule_firings",
            "Rule firings",
            self.rule_firings.clone(),
        );
        r.register(
            "mlopsd_rule_suppressions",
            "Times a rule did not fire, by reason (cooldown, max_concurrent, dry_run)",
            self.rule_suppressions.clone(),
        );
        r.register(
            "mlopsd_schedule_lateness_seconds",
            "How long after its due instant a scheduled item started",
            self.schedule_lateness.clone(),
        );
    }

    /// Runs, gates and declared pipelines.
    fn register_runs(&self, r: &mut Reg) {
        r.register(
            "mlopsd_runs_started",
            "Runs started",
            self.runs_started.clone(),
        );
        r.register(
            "mlopsd_runs_succeeded",
            "Runs that succeeded",
            self.runs_succeeded.clone(),
        );
        r.register(
            "mlopsd_runs_failed",
            "Runs that failed (or could not be started)",
            self.runs_failed.clone(),
        );
        r.register(
            "mlopsd_runs_active",
            "Runs decided or started and not yet ended",
            self.runs_active.clone(),
        );
        r.register(
            "mlopsd_gate_decisions",
            "Gate decisions by result (approved, rejected, no_metric)",
            self.gate_decisions.clone(),
        );
        r.register(
            "mlopsd_pipeline_applies",
            "Declared pipelines: applies and findings by result (created, updated, drifted, failed)",
            self.pipeline_applies.clone(),
        );
        r.register(
            "mlopsd_pipeline_in_sync",
            "1 while a declared pipeline's AWS definition equals its file, 0 otherwise",
            self.pipeline_in_sync.clone(),
        );
        r.register(
            "mlopsd_deployments",
            "Deployments to endpoints by result (started, succeeded, baked, rolled_back, failed, skipped)",
            self.deployments.clone(),
        );
        r.register(
            "mlopsd_endpoint_version",
            "The model package version an endpoint block serves (as mlopsd last saw it)",
            self.endpoint_version.clone(),
        );
    }

    /// AWS calls.
    fn register_aws(&self, r: &mut Reg) {
        r.register(
            "mlopsd_aws_requests",
            "AWS API calls (after SDK retries), by service and operation",
            self.aws_requests.clone(),
        );
        r.register(
            "mlopsd_aws_errors",
            "AWS API calls that failed, by service, operation and error code",
            self.aws_errors.clone(),
        );
        r.register(
            "mlopsd_aws_request_duration_seconds",
            "AWS API call latency, SDK retries included",
            self.aws_latency.clone(),
        );
    }

    /// Notifications.
    fn register_notify(&self, r: &mut Reg) {
        r.register(
            "mlopsd_notifications_sent",
            "SNS messages published",
            self.notifications_sent.clone(),
        );
        r.register(
            "mlopsd_notifications_deduplicated",
            "Notifications not sent because of repeat_interval",
            self.notifications_deduplicated.clone(),
        );
        r.register(
            "mlopsd_notifications_failed",
            "SNS publish attempts that failed (the message stays queued)",
            self.notifications_failed.clone(),
        );
    }

    /// The store, events, the preflight, HA and the process.
    fn register_other(&self, r: &mut Reg) {
        r.register("mlopsd_state_errors", "State store operations that failed, by operation (logged as state_error, shown on /healthz)", self.state_errors.clone());
        r.register("mlopsd_events", "EventBridge events read from the [events] queue, by result (handled, ignored, rejected)", self.events.clone());
        r.register(
            "mlopsd_leader",
            "1 while this replica acts (the HA leader, or a single machine), 0 as a standby",
            self.leader.clone(),
        );
        r.register(
            "mlopsd_preflight_problems",
            "AWS resources the config names that the last preflight found missing, forbidden, without data or unreachable",
            self.preflight_problems.clone(),
        );
        r.register(
            "mlopsd_events_queue_up",
            "1 while the [events] queue answers, 0 while it cannot be reached",
            self.events_queue_up.clone(),
        );
        r.register(
            "mlopsd_start_time_seconds",
            "Unix time the daemon started",
            self.up_since.clone(),
        );
    }

    pub(crate) fn encode(&self) -> String {
        let mut s = String::new();
        if prometheus_client::encoding::text::encode(&mut s, &self.registry).is_err() {
            s.clear();
        }
        // Families with no series yet: their HELP and TYPE, before the end marker (one pass
        // over the text for the families it has).
        let typed: std::collections::HashSet<&str> = s
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        let mut empty = String::new();
        for (name, help, ty) in &self.described {
            if !typed.contains(name.as_str()) {
                empty.push_str(&format!("# HELP {name} {help}.\n# TYPE {name} {ty}\n"));
            }
        }
        match s.rfind("# EOF") {
            Some(i) => s.insert_str(i, &empty),
            None => s.push_str(&empty),
        }
        s
    }

    /// The series the config names, at 0 where none exists yet (on start and every reload):
    /// each check's evaluations, breaches and read errors, each rule's firings, each target's
    /// runs, each gate's decisions, each endpoint's deployments, both reload results. A
    /// counter that exists before its first increment makes `increase()` see that increment.
    pub(crate) fn declare(&self, cfg: &crate::config::Config) {
        for name in cfg.checks.keys() {
            let l = check(name);
            self.check_evaluations.get_or_create(&l).inc_by(0);
            self.check_breaches.get_or_create(&l).inc_by(0);
            self.check_errors.get_or_create(&l).inc_by(0);
        }
        for name in cfg.rules.keys() {
            self.rule_firings.get_or_create(&rule(name)).inc_by(0);
        }
        let targets = cfg
            .pipelines
            .keys()
            .map(|n| ("pipeline", n))
            .chain(cfg.builds.keys().map(|n| ("build", n)));
        for (kind, name) in targets {
            let l = run(kind, name);
            self.runs_started.get_or_create(&l).inc_by(0);
            self.runs_succeeded.get_or_create(&l).inc_by(0);
            self.runs_failed.get_or_create(&l).inc_by(0);
        }
        for gate in cfg.gates.keys() {
            for decision in ["approved", "rejected"] {
                self.gate_decisions
                    .get_or_create(&GateL {
                        gate: gate.clone(),
                        decision: decision.into(),
                    })
                    .inc_by(0);
            }
        }
        for endpoint in cfg.endpoints.keys() {
            for result in ["started", "succeeded", "baked", "rolled_back", "failed"] {
                self.deployments
                    .get_or_create(&DeployL {
                        endpoint: endpoint.clone(),
                        result: result.into(),
                    })
                    .inc_by(0);
            }
        }
        for result in ["success", "failure"] {
            self.reloads
                .get_or_create(&ResultL {
                    result: result.into(),
                })
                .inc_by(0);
        }
    }
}

/// The process's metrics.
pub(crate) fn get() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

pub(crate) fn check(name: &str) -> CheckL {
    CheckL {
        check: name.to_string(),
    }
}

pub(crate) fn rule(name: &str) -> RuleL {
    RuleL {
        rule: name.to_string(),
    }
}

pub(crate) fn run(kind: &str, target: &str) -> RunL {
    RunL {
        kind: kind.to_string(),
        target: target.to_string(),
    }
}

pub(crate) fn notify(notifier: &str, event: &str) -> NotifyL {
    NotifyL {
        notifier: notifier.to_string(),
        event: event.to_string(),
    }
}

/// Records one AWS call's outcome and latency.
pub(crate) fn aws_call(service: &str, operation: &str, secs: f64, error_code: Option<&str>) {
    let m = get();
    let l = AwsL {
        service: service.to_string(),
        operation: operation.to_string(),
    };
    m.aws_requests.get_or_create(&l).inc();
    m.aws_latency.get_or_create(&l).observe(secs);
    if let Some(code) = error_code {
        m.aws_errors
            .get_or_create(&AwsErrL {
                service: service.to_string(),
                operation: operation.to_string(),
                code: code.to_string(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_family_is_registered() {
        let m = super::get();
        // (a family with no labelled member yet is not encoded at all)
        m.state_errors
            .get_or_create(&super::OperationL {
                operation: "t".into(),
            })
            .inc();
        m.events
            .get_or_create(&super::ResultL {
                result: "handled".into(),
            })
            .inc();
        m.schedule_lateness.observe(0.001);
        let s = m.encode();
        for name in [
            "mlopsd_state_errors",
            "mlopsd_events",
            "mlopsd_events_queue_up",
            "mlopsd_schedule_lateness_seconds",
        ] {
            assert!(
                s.contains(&format!("# TYPE {name} ")),
                "{name} is not registered:\n{s}"
            );
        }
    }

    #[test]
    fn every_family_is_described_before_its_first_series() {
        let s = super::get().encode();
        for (name, ty) in [
            ("mlopsd_runs_failed", "counter"),
            ("mlopsd_deployments", "counter"),
            ("mlopsd_endpoint_version", "gauge"),
            ("mlopsd_aws_request_duration_seconds", "histogram"),
        ] {
            assert!(s.contains(&format!("# TYPE {name} {ty}\n")), "{name}:\n{s}");
            assert!(s.contains(&format!("# HELP {name} ")), "{name}:\n{s}");
        }
        assert!(s.ends_with("# EOF\n"), "the end marker stays last:\n{s}");
        assert_eq!(s.matches("# TYPE mlopsd_leader ").count(), 1);
    }

    #[test]
    fn encodes_counters_with_total_suffix() {
        let m = super::get();
        m.check_evaluations
            .get_or_create(&super::check("drift"))
            .inc();
        super::aws_call("sns", "Publish", 0.01, Some("NotFound"));
        let s = m.encode();
        assert!(
            s.contains("mlopsd_check_evaluations_total{check=\"drift\"} 1"),
            "{s}"
        );
        assert!(s.contains("mlopsd_aws_errors_total{service=\"sns\",operation=\"Publish\",code=\"NotFound\"} 1"), "{s}");
        assert!(
            s.contains("mlopsd_aws_request_duration_seconds_bucket"),
            "{s}"
        );
        assert!(s.contains("# EOF"));
    }
}
