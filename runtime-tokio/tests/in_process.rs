//! The daemon run in-process, twice, against mock-llm: when `daemon::run`
//! returns, every task it spawned has ended (the backend pool's among them) and
//! every backend connection it opened is closed.

use std::time::{Duration, Instant};

use clap::Parser;
use handoff_bench::load::handoff::{self, ConnectPolicy};
use handoff_bench::load::HandoffSocketType;
use handoff_bench::mockllm::{MockLlm, MockLlmConfig};
use handoff_bench::scenarios::Clients;
use handoff_io::cli::Cli;
use handoff_io::daemon;
use handoff_tokio::runtime::TokioRuntime;

/// Polls `done` every 10 ms until it holds or `patience` runs out.
async fn eventually(patience: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + patience;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

#[test]
fn running_the_daemon_twice_in_process_leaves_no_task_or_connection_behind() {
    // The browser, the module and the backend live on a runtime of their own, so
    // the daemon's runtime counts only the daemon's tasks.
    let outside =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let mock = outside
        .block_on(MockLlm::start(MockLlmConfig {
            tokens: 5,
            token_delay: Duration::from_millis(1),
            ..MockLlmConfig::default()
        }))
        .expect("mock-llm starts");
    let clients = outside.block_on(Clients::bind());
    let dir = std::env::temp_dir().join(format!("handoff-in-process-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let socket = dir.join("d.sock");

    for run in 1..=2 {
        let argv = ["handoff-tokio", "-s", socket.to_str().expect("utf-8 path"), "-b", "openai"];
        let config = Cli::try_parse_from(argv.iter().copied().chain(["--openai-base", &mock.base_url()]))
            .expect("flags parse")
            .into_config()
            .expect("config is valid");
        let daemon_runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let clients = clients.clone();
        let socket_path = socket.clone();
        let stream = outside.spawn(async move {
            let (client, server_end) = clients.open().await;
            let policy = ConnectPolicy {
                socket_type: HandoffSocketType::SeqPacket,
                attempt_timeout: Duration::from_secs(1),
                attempts: 20,
            };
            let module = handoff::connect(&socket_path, policy).await.expect("the daemon accepts");
            let data = br#"{"prompt":"Hello"}"#;
            handoff::send(
                &module,
                data,
                std::os::fd::AsFd::as_fd(&server_end),
                Duration::from_secs(1),
                policy.socket_type,
            )
            .await
            .expect("handoff sent");
            drop(server_end);
            tokio::time::timeout(Duration::from_secs(10), client.read_to_end()).await.expect("stream ends")
        });
        let (snapshot, leftover_tasks) = daemon_runtime.block_on(async move {
            let daemon = tokio::spawn(daemon::run(TokioRuntime::current(), config, async {
                let _ = stopped.await;
            }));
            let response = stream.await.expect("client task");
            response.expect_completed_stream();
            let _ = stop.send(());
            let snapshot = daemon.await.expect("daemon task").expect("daemon ran");
            let metrics = tokio::runtime::Handle::current().metrics();
            eventually(Duration::from_secs(5), || metrics.num_alive_tasks() == 0).await;
            (snapshot, metrics.num_alive_tasks())
        });
        assert_eq!(snapshot.completed, 1, "run {run}: {snapshot:?}");
        assert_eq!(leftover_tasks, 0, "run {run}: tasks outlived daemon::run");
        drop(daemon_runtime);
        let recorder = mock.recorder().clone();
        let closed =
            outside.block_on(eventually(Duration::from_secs(5), || recorder.connections_open() == 0));
        assert!(closed, "run {run}: {} backend connections still open", recorder.connections_open());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
