//! What handoff-tokio's backend sockets carry: TCP_NODELAY and the keepalive
//! probing core chose.

use std::time::Duration;

use handoff_io::runtime::{Runtime, TcpKeepalive};
use handoff_tokio::runtime::TokioRuntime;
use rustix::net::sockopt;

#[test]
fn backend_sockets_carry_the_keepalive_core_chose_and_none_when_it_is_off() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
    let port = listener.local_addr().expect("an address").port();
    let chosen = TcpKeepalive { idle: Duration::from_secs(42), interval: Duration::from_secs(7), probes: 5 };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        let daemon = TokioRuntime::current();
        let with = daemon.connect_tcp("127.0.0.1", port, Some(chosen)).await.expect("connected");
        let without = daemon.connect_tcp("127.0.0.1", port, None).await.expect("connected");
        assert!(sockopt::tcp_nodelay(&with).expect("TCP_NODELAY"));
        assert!(sockopt::socket_keepalive(&with).expect("SO_KEEPALIVE"));
        assert_eq!(sockopt::tcp_keepidle(&with).expect("TCP_KEEPIDLE"), Duration::from_secs(42));
        assert_eq!(sockopt::tcp_keepintvl(&with).expect("TCP_KEEPINTVL"), Duration::from_secs(7));
        assert_eq!(sockopt::tcp_keepcnt(&with).expect("TCP_KEEPCNT"), 5);
        assert!(!sockopt::socket_keepalive(&without).expect("SO_KEEPALIVE"), "off unless core asks");
    });
    drop(listener);
}
