//! The shared scenario list's mock-backend subset against `handoff-blocking`:
//! every scenario that uses only the mock backend and the flags the example
//! takes. Left out: every OpenAI-backend scenario (the example has no backend
//! client), and the ones about io/'s own features (metrics endpoint, config file,
//! JSON logs, socket owner and group, socket activation, sd_notify).

handoff_bench::scenario_tests!(@each env!("CARGO_BIN_EXE_handoff-blocking");
    mock::mock_stream_is_head_eighteen_indexed_events_and_done,
    mock::response_headers_join_the_head_in_order,
    mock::php_escaped_handoff_is_decoded,
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
);
