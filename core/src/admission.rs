//! Whether a received handoff becomes a stream, and what the client gets when it
//! does not.
//!
//! The order of the checks is the policy:
//! 1. A handoff that did not decode gets `400` (`invalid_request_error` /
//!    `bad_handoff`), whatever the daemon's state: the request itself is wrong,
//!    so a `503` inviting a retry would only earn it the `400` later.
//! 2. While draining (after SIGINT/SIGTERM), every other handoff gets `503`
//!    (`server_unavailable` / `server_shutting_down`) with `Retry-After`, even
//!    with slots free: the daemon is going away and must not start new streams.
//! 3. A handoff whose `user_id` already has as many streams as a per-user limit
//!    allows (`--max-streams-per-user`, or the chosen backend's
//!    `max_streams_per_user`) gets `429` (`rate_limit_exceeded` /
//!    `too_many_streams`) with `Retry-After: 1`: only that user must wait, so it
//!    is judged before the daemon-wide limit and takes none of its slots.
//!    A user who has spent its token budget for the window
//!    (`--user-token-budget`) gets `429` (`rate_limit_exceeded` /
//!    `token_budget_exhausted`) with `Retry-After` until the next window.
//! 4. At the stream limit, `503` (`server_overloaded` / `over_capacity`) with
//!    `Retry-After`.
//!
//! Each refusal is counted exactly once in [`Limits`]: `bad_handoffs`,
//! `rejected_user_limit` (every 429), or `rejected` (every 503) with
//! `rejected_draining` for the draining ones.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;

use crate::handoff::{Handoff, HandoffError};
use crate::http1::{self, ErrorStatus};
use crate::limits::{Admission, Limits};
use crate::redact::redact;
use crate::user_limits::{BackendLimit, UserLimits};

/// What a `429` tells the client to wait, in seconds: one of the user's own
/// streams ending is what frees the slot, and streams end all the time.
pub const USER_LIMIT_RETRY_AFTER_SECS: u32 = 1;

/// Why a handoff was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The handoff data did not decode: `400`.
    BadHandoff(HandoffError),
    /// Every stream slot is taken: `503` with `Retry-After`.
    AtCapacity,
    /// The daemon is shutting down: `503` with `Retry-After`.
    Draining,
    /// The handoff's user has as many streams as a per-user limit allows:
    /// `429` with `Retry-After: 1`.
    UserLimit,
    /// The handoff's user has spent its token budget for the current window:
    /// `429` with `Retry-After` until the next window.
    TokenBudget {
        /// Seconds until the next window.
        retry_after_secs: u32,
    },
}

impl Refusal {
    /// The response status: 400 for a bad handoff, 429 for a user over its
    /// limit, 503 otherwise.
    pub fn status(&self) -> ErrorStatus {
        match self {
            Refusal::BadHandoff(_) => ErrorStatus::BadRequest,
            Refusal::UserLimit | Refusal::TokenBudget { .. } => ErrorStatus::TooManyRequests,
            Refusal::AtCapacity | Refusal::Draining => ErrorStatus::ServiceUnavailable,
        }
    }

    /// The error body's `type`.
    pub fn error_type(&self) -> &'static str {
        match self {
            Refusal::BadHandoff(_) => "invalid_request_error",
            Refusal::AtCapacity => "server_overloaded",
            Refusal::Draining => "server_unavailable",
            Refusal::UserLimit | Refusal::TokenBudget { .. } => "rate_limit_exceeded",
        }
    }

    /// The error body's `code`.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::BadHandoff(_) => "bad_handoff",
            Refusal::AtCapacity => "over_capacity",
            Refusal::Draining => "server_shutting_down",
            Refusal::UserLimit => "too_many_streams",
            Refusal::TokenBudget { .. } => "token_budget_exhausted",
        }
    }

    /// The error body's `message`. A bad handoff's says what is wrong with it
    /// (redacted: a decoder's message may quote the data).
    pub fn message(&self) -> Cow<'static, str> {
        match self {
            Refusal::BadHandoff(error) => Cow::Owned(redact(&error.to_string()).into_owned()),
            Refusal::AtCapacity => Cow::Borrowed("the streaming daemon is at capacity"),
            Refusal::Draining => Cow::Borrowed("the streaming daemon is shutting down"),
            Refusal::UserLimit => Cow::Borrowed("too many concurrent streams for this user"),
            Refusal::TokenBudget { .. } => {
                Cow::Borrowed("this user's token budget for the current window is spent")
            }
        }
    }

    /// The complete HTTP response the client gets: status line, JSON error body in
    /// OpenAI's shape, `Content-Length`, `Connection: close`, for the 503s
    /// `Retry-After: retry_after_secs`, and for the 429
    /// `Retry-After: 1` ([`USER_LIMIT_RETRY_AFTER_SECS`]).
    pub fn response(&self, retry_after_secs: u32) -> Bytes {
        let status = self.status();
        let retry_after = match (self, status) {
            (Refusal::TokenBudget { retry_after_secs }, _) => Some(*retry_after_secs),
            (_, ErrorStatus::ServiceUnavailable) => Some(retry_after_secs),
            (_, ErrorStatus::TooManyRequests) => Some(USER_LIMIT_RETRY_AFTER_SECS),
            _ => None,
        };
        http1::error_response(status, &self.message(), self.error_type(), Some(self.code()), retry_after)
    }
}

/// For the log: what was refused and why.
impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::BadHandoff(error) => write!(f, "bad handoff: {error}"),
            Refusal::AtCapacity => write!(f, "at the stream limit"),
            Refusal::Draining => write!(f, "shutting down"),
            Refusal::UserLimit => write!(f, "at the per-user stream limit"),
            Refusal::TokenBudget { .. } => write!(f, "the user's token budget is spent"),
        }
    }
}

/// Admits a decoded handoff, or says why not (see the module's order). Counts
/// every refusal exactly once in `limits`; an admission counts as started and
/// holds its slot until the [`Admission`] is dropped.
pub fn admit(
    limits: &Arc<Limits>,
    draining: bool,
    decoded: Result<Handoff, HandoffError>,
) -> Result<(Handoff, Admission), Refusal> {
    admit_checked(limits, None, draining, decoded)
}

/// [`admit`] with the per-user limits: `users` (the global per-user limit and
/// every user's counts) and the chosen backend's own limit (`None`: a backend
/// without one). The admission holds the user's slot until it is dropped.
pub fn admit_for_user(
    limits: &Arc<Limits>,
    users: &Arc<UserLimits>,
    backend: Option<BackendLimit<'_>>,
    draining: bool,
    decoded: Result<Handoff, HandoffError>,
    now_unix_ms: u64,
) -> Result<(Handoff, Admission), Refusal> {
    admit_checked(limits, Some((users, backend, now_unix_ms)), draining, decoded)
}

fn admit_checked(
    limits: &Arc<Limits>,
    users: Option<(&Arc<UserLimits>, Option<BackendLimit<'_>>, u64)>,
    draining: bool,
    decoded: Result<Handoff, HandoffError>,
) -> Result<(Handoff, Admission), Refusal> {
    let handoff = match decoded {
        Ok(handoff) => handoff,
        Err(error) => {
            limits.record_bad_handoff();
            return Err(Refusal::BadHandoff(error));
        }
    };
    if draining {
        limits.record_rejected_draining();
        return Err(Refusal::Draining);
    }
    // Taken before the daemon-wide slot, so a 429 never counts as started; a
    // 503 that follows drops the user's slot again.
    if let Some((users, _, now_unix_ms)) = users {
        if let Err(spent) = users.budget().check(handoff.user_id.as_deref(), now_unix_ms) {
            limits.record_rejected_user_limit();
            return Err(Refusal::TokenBudget { retry_after_secs: spent.retry_after_secs });
        }
    }
    let user_slot = match users {
        Some((users, backend, _)) => match users.take(handoff.user_id.as_deref(), backend) {
            Ok(slot) => slot,
            Err(_) => {
                limits.record_rejected_user_limit();
                return Err(Refusal::UserLimit);
            }
        },
        None => None,
    };
    // `try_admit` counts its own refusal in `rejected`.
    match limits.try_admit() {
        Some(admission) => Ok((handoff, admission.with_user_slot(user_slot))),
        None => Err(Refusal::AtCapacity),
    }
}

/// Refuses a handoff that was admitted but failed a check that comes after
/// admission because it costs I/O (reading the files it names): those checks run
/// only for handoffs that get a slot, so a full or draining daemon reads nothing.
/// Counted as a bad handoff, not a started stream; the slot is freed.
pub fn refuse_admitted(admission: Admission, error: HandoffError) -> Refusal {
    admission.into_bad_handoff();
    Refusal::BadHandoff(error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handoff;
    use crate::limits::Snapshot;

    fn good() -> Result<Handoff, HandoffError> {
        handoff::decode(br#"{"prompt":"hi","user_id":"u1"}"#)
    }

    fn bad() -> Result<Handoff, HandoffError> {
        handoff::decode(b"not json")
    }

    /// The response's status line, headers (lower-cased names) and parsed body.
    fn parse(response: &Bytes) -> (String, Vec<(String, String)>, serde_json::Value) {
        let text = std::str::from_utf8(response).expect("responses are UTF-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
        let mut lines = head.split("\r\n");
        let status = lines.next().expect("a status line").to_owned();
        let headers = lines
            .map(|line| {
                let (name, value) = line.split_once(": ").expect("name: value");
                (name.to_ascii_lowercase(), value.to_owned())
            })
            .collect::<Vec<_>>();
        let length = headers.iter().find(|(name, _)| name == "content-length").expect("Content-Length");
        assert_eq!(length.1, body.len().to_string(), "Content-Length counts the body's bytes");
        (status, headers, serde_json::from_str(body).expect("a JSON body"))
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers.iter().find(|(n, _)| n == name).map(|(_, value)| value.as_str())
    }

    fn refusals(snapshot: &Snapshot) -> (u64, u64, u64) {
        (snapshot.bad_handoffs, snapshot.rejected, snapshot.rejected_draining)
    }

    #[test]
    fn a_good_handoff_is_admitted_with_its_slot() {
        let limits = Limits::new(1);
        let (handoff, admission) = admit(&limits, false, good()).expect("admitted");
        assert_eq!(handoff.user_id.as_deref(), Some("u1"));
        assert_eq!(handoff.last_user_text(), "hi");
        let snapshot = limits.snapshot();
        assert_eq!((snapshot.active, snapshot.started), (1, 1));
        assert_eq!(refusals(&snapshot), (0, 0, 0));
        drop(admission);
        assert_eq!(limits.snapshot().active, 0);
        assert!(admit(&limits, false, good()).is_ok(), "the slot is reusable");
    }

    #[test]
    fn a_bad_handoff_gets_400_in_every_state_counted_once() {
        let limits = Limits::new(1);
        let held = admit(&limits, false, good()).expect("admitted");
        for draining in [false, true] {
            let refusal = admit(&limits, draining, bad()).expect_err("refused");
            assert!(matches!(refusal, Refusal::BadHandoff(HandoffError::NotJson(_))), "{refusal:?}");
        }
        let truncated = admit(&limits, false, Err(HandoffError::Truncated)).expect_err("refused");
        assert_eq!(truncated, Refusal::BadHandoff(HandoffError::Truncated));
        let snapshot = limits.snapshot();
        assert_eq!(refusals(&snapshot), (3, 0, 0), "bad handoffs, rejected, rejected draining");
        assert_eq!((snapshot.started, snapshot.active), (1, 1), "no slot was taken");
        drop(held);
    }

    #[test]
    fn a_handoff_refused_after_admission_frees_its_slot_and_counts_as_bad_not_started() {
        let limits = Limits::new(1);
        let (_, admission) = admit(&limits, false, good()).expect("admitted");
        let error = HandoffError::InvalidField { field: "image_paths", reason: "entry 0: gone".into() };
        let refusal = refuse_admitted(admission, error.clone());
        assert_eq!(refusal, Refusal::BadHandoff(error));
        assert_eq!(refusal.status(), ErrorStatus::BadRequest);
        let snapshot = limits.snapshot();
        assert_eq!((snapshot.active, snapshot.started), (0, 0));
        assert_eq!(refusals(&snapshot), (1, 0, 0));
        assert!(admit(&limits, false, good()).is_ok(), "the slot is free again");
    }

    #[test]
    fn draining_refuses_with_slots_free_counted_once() {
        let limits = Limits::new(10);
        let refusal = admit(&limits, true, good()).expect_err("refused while draining");
        assert_eq!(refusal, Refusal::Draining);
        let snapshot = limits.snapshot();
        assert_eq!(refusals(&snapshot), (0, 1, 1));
        assert_eq!((snapshot.started, snapshot.active), (0, 0));
    }

    #[test]
    fn draining_at_capacity_counts_as_draining_only() {
        let limits = Limits::new(1);
        let held = admit(&limits, false, good()).expect("admitted");
        assert_eq!(admit(&limits, true, good()).expect_err("refused"), Refusal::Draining);
        assert_eq!(refusals(&limits.snapshot()), (0, 1, 1), "one 503, counted once, as draining");
        drop(held);
    }

    #[test]
    fn at_capacity_refuses_counted_once() {
        let limits = Limits::new(2);
        let first = admit(&limits, false, good()).expect("admitted");
        let second = admit(&limits, false, good()).expect("admitted");
        assert_eq!(admit(&limits, false, good()).expect_err("refused at the limit"), Refusal::AtCapacity);
        let snapshot = limits.snapshot();
        assert_eq!(refusals(&snapshot), (0, 1, 0));
        assert_eq!((snapshot.started, snapshot.active, snapshot.peak_concurrent), (2, 2, 2));
        drop((first, second));
    }

    #[test]
    fn the_400_response_names_the_problem() {
        let response = Refusal::BadHandoff(HandoffError::NotObject).response(7);
        let (status, headers, body) = parse(&response);
        assert_eq!(status, "HTTP/1.1 400 Bad Request");
        assert_eq!(header(&headers, "content-type"), Some("application/json"));
        assert_eq!(header(&headers, "connection"), Some("close"));
        assert_eq!(header(&headers, "retry-after"), None, "a 400 is not worth retrying");
        assert_eq!(body["error"]["message"], "handoff data is not a JSON object");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["code"], "bad_handoff");
    }

    #[test]
    fn the_503_responses_carry_retry_after_and_their_own_code() {
        for (refusal, error_type, code, message) in [
            (
                Refusal::AtCapacity,
                "server_overloaded",
                "over_capacity",
                "the streaming daemon is at capacity",
            ),
            (
                Refusal::Draining,
                "server_unavailable",
                "server_shutting_down",
                "the streaming daemon is shutting down",
            ),
        ] {
            for retry_after in [1, 30] {
                let (status, headers, body) = parse(&refusal.response(retry_after));
                assert_eq!(status, "HTTP/1.1 503 Service Unavailable", "{refusal:?}");
                assert_eq!(header(&headers, "retry-after"), Some(retry_after.to_string().as_str()));
                assert_eq!(header(&headers, "content-type"), Some("application/json"));
                assert_eq!(body["error"]["type"], error_type);
                assert_eq!(body["error"]["code"], code);
                assert_eq!(body["error"]["message"], message);
            }
        }
    }

    #[test]
    fn a_user_past_its_token_budget_gets_429_until_the_next_window() {
        let limits = Limits::new(10);
        let users = UserLimits::new(0);
        users.budget().configure(20, std::time::Duration::from_secs(60));
        let usage = crate::openai::Usage { total_tokens: Some(25), ..Default::default() };
        users.budget().spend(Some("u1"), &usage, 1_000);
        let refused = admit_for_user(&limits, &users, None, false, of_user("u1"), 1_000).expect_err("spent");
        assert_eq!(refused, Refusal::TokenBudget { retry_after_secs: 59 });
        let (status, headers, body) = parse(&refused.response(7));
        assert_eq!(status, "HTTP/1.1 429 Too Many Requests");
        assert_eq!(header(&headers, "retry-after"), Some("59"), "until the next window");
        assert_eq!(body["error"]["type"], "rate_limit_exceeded");
        assert_eq!(body["error"]["code"], "token_budget_exhausted");
        assert_eq!(limits.snapshot().rejected_user_limit, 1, "counted with the 429s");
        assert_eq!(limits.snapshot().started, 0, "a refusal starts nothing");
        assert!(admit_for_user(&limits, &users, None, false, of_user("u2"), 1_000).is_ok(), "another user");
        assert!(
            admit_for_user(&limits, &users, None, false, of_user("u1"), 60_000).is_ok(),
            "the next window"
        );
    }

    fn of_user(user: &str) -> Result<Handoff, HandoffError> {
        handoff::decode(format!(r#"{{"prompt":"hi","user_id":"{user}"}}"#).as_bytes())
    }

    #[test]
    fn a_user_over_its_limit_gets_429_counted_once_and_takes_no_slot() {
        let limits = Limits::new(10);
        let users = UserLimits::new(2);
        let admit_user = |user| admit_for_user(&limits, &users, None, false, of_user(user), 0);
        let first = admit_user("u1").expect("first of u1");
        let second = admit_user("u1").expect("second of u1");
        assert_eq!(admit_user("u1").expect_err("third of u1"), Refusal::UserLimit);
        let other = admit_user("u2").expect("u2 is served");
        let anonymous = admit_for_user(
            &limits,
            &users,
            None,
            false,
            good().map(|mut handoff| {
                handoff.user_id = None;
                handoff
            }),
            0,
        );
        assert!(anonymous.is_ok(), "a handoff without user_id is not limited");
        let snapshot = limits.snapshot();
        assert_eq!((snapshot.started, snapshot.active), (4, 4), "the 429 took no slot");
        assert_eq!((snapshot.rejected_user_limit, snapshot.rejected), (1, 0));
        drop(first);
        assert!(admit_user("u1").is_ok(), "an ended stream frees its user's slot");
        drop((second, other, anonymous));
    }

    #[test]
    fn a_backend_limit_refuses_only_on_that_backend() {
        let limits = Limits::new(10);
        let users = UserLimits::new(0);
        let on = |name| Some(BackendLimit { name, max_per_user: 1 });
        let held = admit_for_user(&limits, &users, on("a"), false, of_user("u1"), 0).expect("first on a");
        let refused = admit_for_user(&limits, &users, on("a"), false, of_user("u1"), 0);
        assert_eq!(refused.expect_err("second on a"), Refusal::UserLimit);
        assert!(admit_for_user(&limits, &users, on("b"), false, of_user("u1"), 0).is_ok());
        assert!(admit_for_user(&limits, &users, None, false, of_user("u1"), 0).is_ok());
        drop(held);
    }

    #[test]
    fn at_capacity_a_users_slot_is_given_back() {
        let limits = Limits::new(1);
        let users = UserLimits::new(1);
        let held = admit_for_user(&limits, &users, None, false, of_user("u1"), 0).expect("admitted");
        let refused = admit_for_user(&limits, &users, None, false, of_user("u2"), 0);
        assert_eq!(refused.expect_err("at capacity"), Refusal::AtCapacity);
        assert_eq!(users.streams_of("u2"), 0, "the 503 left no count behind");
        let refused = admit_for_user(&limits, &users, None, true, of_user("u1"), 0);
        assert_eq!(refused.expect_err("draining first"), Refusal::Draining);
        drop(held);
        assert_eq!(users.tracked(), 0);
    }

    #[test]
    fn a_handoff_refused_after_admission_frees_its_users_slot() {
        let limits = Limits::new(10);
        let users = UserLimits::new(1);
        let (_, admission) =
            admit_for_user(&limits, &users, None, false, of_user("u1"), 0).expect("admitted");
        let _ = refuse_admitted(admission, HandoffError::Truncated);
        assert_eq!(users.streams_of("u1"), 0);
    }

    #[test]
    fn the_429_response_carries_retry_after_one_and_its_code() {
        for retry_after in [1, 30] {
            let (status, headers, body) = parse(&Refusal::UserLimit.response(retry_after));
            assert_eq!(status, "HTTP/1.1 429 Too Many Requests");
            assert_eq!(header(&headers, "retry-after"), Some("1"), "not --retry-after's {retry_after}");
            assert_eq!(header(&headers, "content-type"), Some("application/json"));
            assert_eq!(header(&headers, "connection"), Some("close"));
            assert_eq!(body["error"]["type"], "rate_limit_exceeded");
            assert_eq!(body["error"]["code"], "too_many_streams");
            assert_eq!(body["error"]["message"], "too many concurrent streams for this user");
        }
        assert_eq!(Refusal::UserLimit.to_string(), "at the per-user stream limit");
    }

    #[test]
    fn a_bad_handoff_message_is_redacted() {
        let error = HandoffError::InvalidField {
            field: "model",
            reason: "unexpected sk-abcdefghijklmnopqrstuvwxyz012345".to_owned(),
        };
        let refusal = Refusal::BadHandoff(error);
        let response = refusal.response(1);
        let text = std::str::from_utf8(&response).unwrap();
        assert!(!text.contains("abcdefghijklmnopqrstuvwxyz"), "{text}");
        let (_, _, body) = parse(&response);
        assert_eq!(body["error"]["message"], "handoff field `model` is invalid: unexpected sk-[redacted]");
    }

    #[test]
    fn refusals_display_for_the_log() {
        assert_eq!(Refusal::AtCapacity.to_string(), "at the stream limit");
        assert_eq!(Refusal::Draining.to_string(), "shutting down");
        assert_eq!(
            Refusal::BadHandoff(HandoffError::Truncated).to_string(),
            "bad handoff: handoff message is larger than the 65536-byte limit"
        );
    }

    /// Threads admit a mix of good and bad handoffs, some while "draining", and
    /// hold what they get: the limit is met exactly and every call is counted in
    /// exactly one place.
    #[test]
    fn concurrent_admissions_never_exceed_the_limit_and_count_every_refusal_once() {
        const THREADS: usize = 6;
        const ATTEMPTS: usize = 300;
        const MAX: u64 = 500;
        let limits = Limits::new(MAX);
        let barrier = Arc::new(std::sync::Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|thread| {
                let limits = Arc::clone(&limits);
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    let mut held = Vec::new();
                    let mut seen = (0u64, 0u64, 0u64, 0u64);
                    for attempt in 0..ATTEMPTS {
                        let decoded = if (thread + attempt) % 7 == 0 { bad() } else { good() };
                        let draining = (thread * 31 + attempt) % 11 == 0;
                        match admit(&limits, draining, decoded) {
                            Ok(admitted) => {
                                assert!(limits.snapshot().active <= MAX);
                                held.push(admitted);
                                seen.0 += 1;
                            }
                            Err(Refusal::BadHandoff(_)) => seen.1 += 1,
                            Err(Refusal::AtCapacity) => seen.2 += 1,
                            Err(Refusal::Draining) => seen.3 += 1,
                            Err(Refusal::UserLimit | Refusal::TokenBudget { .. }) => {
                                panic!("no per-user limit here")
                            }
                        }
                    }
                    barrier.wait();
                    seen
                })
            })
            .collect();
        let (mut admitted, mut bad_handoffs, mut at_capacity, mut draining) = (0, 0, 0, 0);
        for handle in handles {
            let seen = handle.join().expect("admitting thread panicked");
            admitted += seen.0;
            bad_handoffs += seen.1;
            at_capacity += seen.2;
            draining += seen.3;
        }
        assert_eq!(admitted, MAX, "the good, non-draining attempts outnumber the limit");
        let snapshot = limits.snapshot();
        assert_eq!(snapshot.started, admitted);
        assert_eq!(snapshot.peak_concurrent, MAX);
        assert_eq!(snapshot.bad_handoffs, bad_handoffs);
        assert_eq!(snapshot.rejected, at_capacity + draining);
        assert_eq!(snapshot.rejected_draining, draining);
        assert_eq!(admitted + bad_handoffs + at_capacity + draining, (THREADS * ATTEMPTS) as u64);
        assert_eq!(snapshot.active, 0, "every admission was dropped with its thread");
    }
}
