//! Bottleneck flags: signs that a cell measured something other than the daemon.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::results::MockLlmUsage;
use crate::load::LoadReport;

/// Why a cell's figures may describe the test rig rather than the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Bottleneck {
    /// mock-llm kept (nearly) a whole core busy over the run: the backend may have
    /// paced the daemon.
    MockLlmCpu { core_share: f64 },
    /// The load generator (one runtime thread by default) kept a core busy: its
    /// latencies include its own queueing.
    GeneratorCpu { core_share: f64 },
    /// The generator could not set up client connections (its fd limit, ephemeral
    /// ports): those streams never reached the daemon.
    GeneratorClientFailures { count: u64 },
    /// The machine as a whole was (nearly) out of CPU: the daemon competed with the
    /// rig (and anything else running) for cores.
    HostCpu { busy_share: f64 },
}

impl fmt::Display for Bottleneck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bottleneck::MockLlmCpu { core_share } => write!(f, "mock-llm CPU {:.0}%", core_share * 100.0),
            Bottleneck::GeneratorCpu { core_share } => write!(f, "generator CPU {:.0}%", core_share * 100.0),
            Bottleneck::GeneratorClientFailures { count } => write!(f, "generator client failures {count}"),
            Bottleneck::HostCpu { busy_share } => write!(f, "host CPU {:.0}%", busy_share * 100.0),
        }
    }
}

/// The flags a cell earns. `saturation` is the share (0 to 1) of one core for
/// mock-llm and the generator, and of the whole machine for the host.
pub fn detect(
    load: &LoadReport,
    mock_llm: Option<&MockLlmUsage>,
    host_busy: Option<f64>,
    saturation: f64,
) -> Vec<Bottleneck> {
    let mut flags = Vec::new();
    if let Some(mock) = mock_llm {
        if mock.core_share >= saturation {
            flags.push(Bottleneck::MockLlmCpu { core_share: mock.core_share });
        }
    }
    if load.elapsed_secs > 0.0 {
        let core_share = load.generator.cpu_seconds / load.elapsed_secs;
        if core_share >= saturation {
            flags.push(Bottleneck::GeneratorCpu { core_share });
        }
    }
    if load.failures.client > 0 {
        flags.push(Bottleneck::GeneratorClientFailures { count: load.failures.client });
    }
    if let Some(busy_share) = host_busy.filter(|busy| *busy >= saturation) {
        flags.push(Bottleneck::HostCpu { busy_share });
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn report(elapsed_secs: f64, generator_cpu: f64, client_failures: u64) -> LoadReport {
        let mut report = super::super::testdata::load_report(1.0, 1536.0, 2.0);
        report.elapsed_secs = elapsed_secs;
        report.generator.cpu_seconds = generator_cpu;
        report.failures = crate::load::FailureCounts { client: client_failures, ..Default::default() };
        report
    }

    fn mock(core_share: f64) -> MockLlmUsage {
        MockLlmUsage {
            pid: 1,
            cpu_seconds: core_share * 20.0,
            core_share,
            peak_connections: None,
            summary: BTreeMap::new(),
            stop: String::new(),
        }
    }

    #[test]
    fn a_quiet_rig_raises_no_flag() {
        assert_eq!(detect(&report(20.0, 2.0, 0), Some(&mock(0.3)), Some(0.5), 0.9), []);
    }

    #[test]
    fn a_busy_generator_or_mock_llm_or_machine_is_flagged() {
        let flags = detect(&report(20.0, 19.0, 0), Some(&mock(0.95)), Some(0.97), 0.9);
        assert_eq!(
            flags,
            [
                Bottleneck::MockLlmCpu { core_share: 0.95 },
                Bottleneck::GeneratorCpu { core_share: 0.95 },
                Bottleneck::HostCpu { busy_share: 0.97 }
            ]
        );
        assert_eq!(flags[0].to_string(), "mock-llm CPU 95%");
    }

    #[test]
    fn client_side_failures_are_the_generators_not_the_daemons() {
        let flags = detect(&report(20.0, 1.0, 3), None, None, 0.9);
        assert_eq!(flags, [Bottleneck::GeneratorClientFailures { count: 3 }]);
    }
}
