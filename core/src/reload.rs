//! What a configuration reload (SIGHUP) may change while streams run.
//!
//! The backends (the flags' and the named ones, with their pools, stream
//! timeouts and per-user limits), `--max-connections` and
//! `--max-streams-per-user` take effect for the handoffs that arrive
//! after the reload; running streams finish on the backend and timeouts they
//! started with. Everything else is fixed by what the process set up at start
//! (the socket, its owner and mode, workers, log format, the metrics endpoint,
//! who may hand off, the data directory, ...): a change there is reported as
//! needing a restart, and the rest of the reload still applies.

use crate::config::Config;

/// How a new configuration compares with the running one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReloadPlan {
    /// What the reload changes now, by setting name.
    pub applied: Vec<&'static str>,
    /// What changed but takes effect only at the next start, by setting name.
    pub restart_needed: Vec<&'static str>,
}

impl ReloadPlan {
    /// True when the new configuration changes nothing the reload applies.
    pub fn is_empty(&self) -> bool {
        self.applied.is_empty()
    }
}

/// Compares `new` with `old`: what a reload applies, and what waits for a restart.
pub fn plan(old: &Config, new: &Config) -> ReloadPlan {
    let mut plan = ReloadPlan::default();
    let mut check = |changed: bool, name: &'static str, applies: bool| {
        if changed {
            if applies {
                plan.applied.push(name);
            } else {
                plan.restart_needed.push(name);
            }
        }
    };
    check(old.backend != new.backend || old.pool != new.pool, "the default backend", true);
    check(old.stream != new.stream, "stream timeouts and limits", true);
    check(old.named_backends != new.named_backends, "named backends", true);
    check(old.max_streams != new.max_streams, "max-connections", true);
    check(old.max_streams_per_user != new.max_streams_per_user, "max-streams-per-user", true);
    check(
        old.user_token_budget != new.user_token_budget || old.user_token_window != new.user_token_window,
        "user-token-budget",
        true,
    );
    check(old.socket_path != new.socket_path, "socket", false);
    check(old.socket_mode != new.socket_mode, "mode", false);
    check(
        old.socket_owner != new.socket_owner || old.socket_group != new.socket_group,
        "socket-owner/group",
        false,
    );
    check(old.socket_type != new.socket_type, "socket-type", false);
    check(old.log_format != new.log_format, "log-format", false);
    check(old.threads != new.threads, "threads", false);
    check(old.benchmark != new.benchmark, "benchmark", false);
    check(old.metrics != new.metrics, "metrics-addr", false);
    check(old.allow_uids != new.allow_uids || old.allow_gids != new.allow_gids, "allow-uid/gid", false);
    check(old.attachments != new.attachments, "data-dir and attachment limits", false);
    // The records threads are started once; SIGHUP only reopens the file.
    check(old.records != new.records, "records (file, webhook, spool)", false);
    check(
        old.drain_timeout != new.drain_timeout
            || old.receive_timeout != new.receive_timeout
            || old.retry_after_secs != new.retry_after_secs,
        "drain-timeout, receive-timeout, retry-after",
        false,
    );
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn config(change: impl FnOnce(&mut Settings)) -> Config {
        let mut settings = Settings::default();
        change(&mut settings);
        settings.validate().unwrap()
    }

    #[test]
    fn backends_timeouts_and_the_limit_apply_and_the_rest_waits_for_a_restart() {
        let old = config(|_| {});
        assert_eq!(plan(&old, &old), ReloadPlan::default(), "the same file changes nothing");
        let new = config(|s| {
            s.first_byte_timeout = 5;
            s.max_connections = 10;
            s.socket = "/run/other.sock".into();
            s.threads = 2;
        });
        let plan = plan(&old, &new);
        assert_eq!(plan.applied, ["stream timeouts and limits", "max-connections"]);
        assert_eq!(plan.restart_needed, ["socket", "threads"]);
        let backends = config(|s| {
            s.backend = crate::config::BackendKind::Openai;
            s.openai_base = "http://127.0.0.1:9/v1".into();
        });
        assert_eq!(super::plan(&old, &backends).applied, ["the default backend"]);
        let per_user = config(|s| s.max_streams_per_user = 2);
        assert_eq!(super::plan(&old, &per_user).applied, ["max-streams-per-user"]);
    }
}
