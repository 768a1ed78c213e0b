//! The integration scenarios every daemon binary must pass: the wire contract of
//! `DESIGN.md` §1, checked from outside against a real process.
//!
//! One list, run against each runtime's binary by its own test file:
//! ```text
//! // runtime-tokio/tests/scenarios.rs
//! handoff_bench::scenario_tests!(env!("CARGO_BIN_EXE_handoff-tokio"));
//! ```
//! expands to one `#[test]` per scenario. Each test builds a small tokio runtime for
//! the client side (the browser, the module, and `mock-llm` as the backend), starts
//! the daemon on a private socket, hands off real loopback TCP sockets exactly as
//! mod_socket_handoff does (SOCK_SEQPACKET, SCM_RIGHTS), reads the responses and
//! checks them byte for byte where the contract fixes the bytes, then stops the
//! daemon with SIGTERM and checks it exits 0 and removes its socket file. Every wait
//! is bounded; every process is killed when its test ends; a failed test prints the
//! daemons' output.

pub mod client;
pub mod daemon;
pub mod list;
pub mod response;
pub mod scratch;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use client::{Client, Clients, Close};
pub use daemon::{Daemon, DaemonCommand, DaemonLogs};
pub use response::{content, content_events, ending, Ending, ErrorObject, Event, Response, SSE_HEAD};
pub use scratch::Scratch;

/// The longest one scenario may run before it fails.
pub const SCENARIO_TIMEOUT: Duration = Duration::from_secs(120);

/// What a scenario gets: the binary under test, a private directory, and client
/// connections.
#[derive(Debug)]
pub struct Context {
    binary: PathBuf,
    scratch: Scratch,
    logs: DaemonLogs,
    clients: Arc<Clients>,
}

impl Context {
    /// Binds the client listener; call inside the scenario's runtime.
    pub async fn new(binary: impl Into<PathBuf>, logs: DaemonLogs) -> Context {
        Context { binary: binary.into(), scratch: Scratch::new(), logs, clients: Clients::bind().await }
    }

    /// A daemon of the binary under test on `d.sock` in the scenario's directory.
    pub fn daemon(&self) -> DaemonCommand {
        DaemonCommand::new(
            self.binary.clone(),
            self.scratch.path("d.sock"),
            self.logs.clone(),
            Arc::clone(&self.clients),
        )
    }

    /// The binary under test.
    pub fn binary(&self) -> &std::path::Path {
        &self.binary
    }

    pub fn scratch(&self) -> &Scratch {
        &self.scratch
    }

    pub fn clients(&self) -> &Arc<Clients> {
        &self.clients
    }
}

/// Runs one scenario against `binary` on a fresh two-thread tokio runtime, bounded by
/// [`SCENARIO_TIMEOUT`]. A failure (panic or timeout) prints every daemon's output
/// first, then fails the test.
pub fn run_scenario<F, Fut>(binary: &str, scenario: F)
where
    F: FnOnce(Context) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("building the client runtime: {e}"));
    let logs = DaemonLogs::default();
    let task_logs = logs.clone();
    let binary = PathBuf::from(binary);
    let outcome = runtime.block_on(async move {
        let task = tokio::spawn(async move { scenario(Context::new(binary, task_logs).await).await });
        tokio::time::timeout(SCENARIO_TIMEOUT, task).await
    });
    // Dropping the runtime drops a timed-out scenario, which kills its daemons.
    runtime.shutdown_timeout(Duration::from_secs(5));
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(failed)) => {
            logs.print();
            match failed.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(error) => panic!("the scenario task ended abnormally: {error}"),
            }
        }
        Err(_elapsed) => {
            logs.print();
            panic!("the scenario did not finish within {SCENARIO_TIMEOUT:?}");
        }
    }
}

/// Expands to one `#[test]` per scenario, each running it against `$binary`.
/// This is the list: a scenario not named here does not run.
#[macro_export]
macro_rules! scenario_tests {
    ($binary:expr) => {
        $crate::scenario_tests!(@each $binary;
            mock::mock_stream_is_head_eighteen_indexed_events_and_done,
            mock::response_headers_join_the_head_in_order,
            mock::php_escaped_handoff_is_decoded,
            patterns::patterns_over_http1,
            patterns::patterns_over_h2c,
            patterns::patterns_over_tls,
            records::webhook_records_survive_a_receiver_down_and_a_daemon_restart,
            limits::a_user_past_its_token_budget_gets_429_and_others_are_served,
            patterns::http1_connection_cut_by_a_reset_is_not_reused,
            patterns::http1_connections_are_kept_alive_between_streams,
            pacing::keep_alive_comment_fills_upstream_silence,
            pacing::first_byte_timeout_ends_stream_with_error,
            pacing::idle_timeout_ends_stream_with_error,
            pacing::total_timeout_ends_stream_with_error,
            pacing::slow_reader_gets_every_byte,
            flow::stalled_client_does_not_slow_ninety_nine_on_its_connection,
            flow::stalled_client_ends_after_write_timeout_and_frees_its_slot,
            flow::content_after_two_thousand_content_less_chunks_arrives_at_once,
            backend::unreachable_backend_gets_error_event,
            backend::tls_is_verified_unless_insecure,
            backend::environment_configures_the_backend,
            request::request_shape_over_h2c,
            request::request_shape_over_http1,
            request::request_fields_reach_the_backend_over_h2c,
            request::request_fields_reach_the_backend_over_http1,
            request::wrong_request_field_types_get_400_naming_the_field,
            attachments::images_and_attachments_reach_the_backend_and_only_from_the_data_dir,
            named::named_backends_serve_the_handoffs_that_name_them_and_unknown_names_get_400,
            named::passthrough_backend_forwards_the_upstreams_events_unchanged,
            named::sighup_reloads_backends_and_a_bad_file_keeps_the_running_config,
            named::a_backend_on_a_unix_socket_is_reached_over_http1_and_h2c,
            named::a_silent_backend_connection_is_dropped_after_an_unanswered_ping,
            formats::openai_format_forwards_every_chunk_with_tool_calls_and_reasoning,
            formats::reasoning_events_arrive_in_content_mode_only_when_asked,
            formats::mock_backend_writes_the_openai_format,
            sharing::hundred_tls_streams_share_two_connections,
            sharing::three_hundred_streams_run_at_once_on_three_connections,
            sharing::thousand_concurrent_streams_complete,
            sharing::streams_per_connection_is_clamped_to_ten,
            cancel::client_disconnect_cancels_upstream_over_h2c,
            cancel::client_disconnect_cancels_upstream_over_tls,
            cancel::client_disconnect_cancels_upstream_over_http1,
            cancel::clients_gone_at_once_leave_no_upstream_streams,
            cancel::client_closed_before_handoff_cancels_upstream,
            cancel::client_closed_before_handoff_is_gone_with_the_mock_backend,
            handoffs::invalid_json_gets_400,
            handoffs::non_object_json_gets_400,
            handoffs::wrong_field_types_get_400,
            handoffs::oversize_data_gets_400,
            handoffs::extra_fds_are_closed_and_the_first_served,
            handoffs::message_without_fd_is_dropped,
            handoffs::empty_data_and_lone_nul_mean_defaults,
            handoffs::client_bytes_never_reset_the_response,
            handoffs::silent_module_connection_does_not_stall_others,
            handoffs::bad_handoffs_over_sock_stream_get_400,
            limits::third_stream_over_max_connections_gets_503,
            limits::per_user_limit_refuses_a_users_third_stream_with_429_and_serves_others,
            limits::per_user_limit_of_a_backend_counts_only_its_streams,
            guard::guard_only_stream_sockets_are_served,
            guard::guard_a_peer_not_allowed_is_closed_unread,
            guard::guard_allowed_peers_are_served_and_unknown_names_refused,
            guard::guard_out_of_fds_every_client_gets_a_stream_or_a_503,
            lifecycle::sigterm_lets_running_stream_finish,
            lifecycle::drain_timeout_ends_stream_with_error,
            lifecycle::sigint_stops_like_sigterm,
            lifecycle::sigterm_answers_every_queued_handoff,
            lifecycle::stale_socket_is_replaced,
            lifecycle::live_socket_is_not_taken_over,
            lifecycle::stream_socket_type_handoff_works,
            lifecycle::socket_file_has_the_configured_mode,
            lifecycle::soft_fd_limit_is_raised_to_the_hard_limit,
            lifecycle::logs_to_a_pipe_are_plain_text_at_info,
            lifecycle::sigterm_at_once_after_start_is_a_clean_stop,
            operating::operating_json_log_lines_parse_with_level_message_and_fields,
            operating::operating_config_file_sits_under_environment_and_flags,
            operating::operating_config_file_mistakes_name_file_line_and_key,
            operating::operating_socket_owner_and_group_are_applied_before_accepting,
            operating::operating_api_key_never_reaches_a_log_line_or_an_error,
            metrics::metrics_count_streams_refusals_and_latencies,
            metrics::metrics_health_is_503_while_draining,
            metrics::metrics_count_backend_statuses_and_connections,
            metrics::metrics_endpoint_bounds_connections_and_heads,
            activation::restart_on_an_inherited_socket_loses_no_handoff,
            activation::sigterm_on_an_inherited_socket_leaves_the_queue_to_the_next_daemon,
            activation::notify_socket_gets_ready_watchdog_and_stopping,
            activation::bad_activation_fds_are_refused,
            activation::activation_variables_for_another_process_are_ignored,
        );
    };
    (@each $binary:expr; $($module:ident :: $name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::scenarios::run_scenario($binary, $crate::scenarios::list::$module::$name);
            }
        )*
    };
}

#[cfg(test)]
mod tests {
    /// Every scenario (a `pub async fn name(cx: Context)` in `list/`) is in the macro's
    /// list, so none is written and then silently never run.
    #[test]
    fn every_scenario_is_listed() {
        let this_file = include_str!("mod.rs");
        let modules = [
            ("activation", include_str!("list/activation.rs")),
            ("backend", include_str!("list/backend.rs")),
            ("cancel", include_str!("list/cancel.rs")),
            ("flow", include_str!("list/flow.rs")),
            ("formats", include_str!("list/formats.rs")),
            ("guard", include_str!("list/guard.rs")),
            ("handoffs", include_str!("list/handoffs.rs")),
            ("lifecycle", include_str!("list/lifecycle.rs")),
            ("limits", include_str!("list/limits.rs")),
            ("metrics", include_str!("list/metrics.rs")),
            ("mock", include_str!("list/mock.rs")),
            ("operating", include_str!("list/operating.rs")),
            ("pacing", include_str!("list/pacing.rs")),
            ("patterns", include_str!("list/patterns.rs")),
            ("request", include_str!("list/request.rs")),
            ("sharing", include_str!("list/sharing.rs")),
        ];
        let mut scenarios = 0;
        for (module, source) in modules {
            for line in source.lines() {
                let Some(name) =
                    line.strip_prefix("pub async fn ").and_then(|rest| rest.strip_suffix("(cx: Context) {"))
                else {
                    continue;
                };
                scenarios += 1;
                let entry = format!("            {module}::{name},\n");
                assert!(
                    this_file.contains(&entry),
                    "scenario {module}::{name} is missing from scenario_tests!"
                );
            }
        }
        assert!(scenarios >= 51, "found only {scenarios} scenarios; did the signature change?");
    }
}
