//! The records webhook (being written): spool, POST, retry.

use std::sync::Arc;
use std::time::Instant;

use handoff_core::delivery::WebhookConfig;
use handoff_core::metrics::Metrics;

pub(super) struct Webhook {}

impl Webhook {
    pub(super) fn start(
        _config: &WebhookConfig,
        _queue: usize,
        _metrics: Arc<Metrics>,
    ) -> Result<Webhook, String> {
        Err("the records webhook is not built yet".into())
    }

    pub(super) fn submit(&self, _json: Vec<u8>) -> bool {
        false
    }

    pub(super) fn shutdown(&self, _deadline: Instant) {}
}
