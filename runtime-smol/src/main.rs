//! handoff-smol: the handoff daemon on smol (async-io reactor, async-executor).
//! Each worker is an executor run by one thread only, with its own timer queue:
//! it accepts its own handoffs and owns its streams, timers and backend
//! connections, so no task moves between threads.

mod runtime;
mod timer_queue;

use std::process::ExitCode;
use std::sync::Arc;

use handoff_io::daemon;
use handoff_io::entry;

fn main() -> ExitCode {
    entry::main("handoff-smol", |config| {
        let threads = entry::thread_count(&config);
        entry::serve_workers("handoff-smol", config, threads, |plan, stop| {
            let executor = Arc::new(smol::Executor::new());
            let runtime = runtime::SmolRuntime::new(executor.clone());
            async_io::block_on(executor.run(async {
                let shutdown = stop.shutdown(runtime::shutdown_signal)?;
                daemon::run_worker(runtime, plan, shutdown).await
            }))
        })
    })
}
