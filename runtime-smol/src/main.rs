//! handoff-smol: the handoff daemon on smol (async-io reactor, async-executor).
//! Each worker is an executor run by one thread only, with its own timer queue:
//! it accepts its own handoffs and owns its streams, timers and backend
//! connections, so no task moves between threads.

mod runtime;
mod timer_queue;

use std::process::ExitCode;
use std::sync::Arc;

use handoff_io::daemon::{self, DaemonError};
use handoff_io::entry;

fn main() -> ExitCode {
    entry::main("handoff-smol", |config| {
        let threads = entry::thread_count(&config);
        entry::serve_workers("handoff-smol", config, threads, |plan, stop| {
            let executor = Arc::new(smol::Executor::new());
            let runtime = runtime::SmolRuntime::new(executor.clone());
            async_io::block_on(executor.run(async {
                let signal = if stop.is_leader() {
                    Some(
                        runtime::shutdown_signal()
                            .map_err(|e| DaemonError::Io("installing signal handlers", e))?,
                    )
                } else {
                    None
                };
                daemon::run_worker(runtime, plan, stop.wait(signal)).await
            }))
        })
    })
}
