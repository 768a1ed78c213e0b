//! handoff-tokio: the handoff daemon on the tokio runtime.

use std::process::ExitCode;

use handoff_tokio::runtime;

use handoff_io::daemon::{self, DaemonError};
use handoff_io::entry;

fn main() -> ExitCode {
    entry::main("handoff-tokio", |config| {
        let threads = entry::thread_count(&config);
        let mut builder = if threads == 1 {
            tokio::runtime::Builder::new_current_thread()
        } else {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(threads);
            builder
        };
        let tokio = builder
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| DaemonError::Io("starting the tokio runtime", e))?;
        tokio.block_on(async {
            let shutdown =
                runtime::shutdown_signal().map_err(|e| DaemonError::Io("installing signal handlers", e))?;
            daemon::run(runtime::TokioRuntime::current(), config, shutdown).await
        })
    })
}
