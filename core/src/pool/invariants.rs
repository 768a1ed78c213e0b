//! The pool's bookkeeping checked against itself, for tests and fuzzing.

use std::cmp::Reverse;
use std::collections::HashSet;

use super::queue::WaitQueue;
use super::{capacity, is_queued, ConnState, PingTimer, Pool, StreamSlot};

impl Pool {
    /// Checks every rule the pool's indexes and counters must keep, and names the
    /// first one broken. Walks everything: for tests and fuzz targets only.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.check_connections()?;
        self.check_streams()?;
        self.check_waiting()
    }

    fn check_connections(&self) -> Result<(), String> {
        let config = &self.config;
        let (mut connecting, mut serving, mut running_total) = (0, 0, 0);
        for (&id, conn) in &self.conns {
            let running = conn.streams.len() as u32;
            running_total += conn.streams.len();
            match conn.state {
                ConnState::Connecting => connecting += 1,
                ConnState::Ready => serving += 1,
                ConnState::Draining if running == 0 => {
                    return Err(format!("{id:?} drained but was not closed"));
                }
                ConnState::Draining => {}
            }
            if conn.state == ConnState::Connecting && running > 0 {
                return Err(format!("{id:?} carries {running} streams before it is ready"));
            }
            if running > config.max_streams_per_connection {
                return Err(format!(
                    "{id:?} carries {running} streams, more than {} per connection",
                    config.max_streams_per_connection
                ));
            }
            for (index, stream) in conn.streams.iter().enumerate() {
                match self.streams.get(stream) {
                    Some(&StreamSlot::Running { conn: at, index: recorded, .. })
                        if at == id && recorded as usize == index => {}
                    other => return Err(format!("{stream:?} at {id:?}[{index}] is recorded as {other:?}")),
                }
            }
            let should_be_available = conn.state == ConnState::Ready && running < capacity(config, conn);
            let expected_key = should_be_available.then_some(running);
            if conn.available_as != expected_key {
                return Err(format!(
                    "{id:?} ({:?}, {running} running, capacity {}) indexed as available with {:?}",
                    conn.state,
                    capacity(config, conn),
                    conn.available_as
                ));
            }
            if let Some(running) = conn.available_as {
                if !self.available.contains(&(Reverse(running), id)) {
                    return Err(format!("{id:?} missing from the available set"));
                }
            }
            let should_idle = conn.state == ConnState::Ready && running == 0;
            if conn.idle_deadline.is_some() != should_idle {
                return Err(format!(
                    "{id:?} ({:?}, {running} running) idle deadline {:?}",
                    conn.state, conn.idle_deadline
                ));
            }
            if let Some(deadline) = conn.idle_deadline {
                if !self.idle.contains(&(deadline, id)) {
                    return Err(format!("{id:?} missing from the idle set"));
                }
            }
            // Idle and pinging: a PING is due or out. Busy: none is due.
            match conn.ping {
                PingTimer::Off if should_idle && config.ping.is_some() => {
                    return Err(format!("{id:?} is idle and nothing pings it"));
                }
                PingTimer::SendAt(_) if !should_idle || config.ping.is_none() => {
                    return Err(format!("{id:?} ({:?}, {running} running) has a PING due", conn.state));
                }
                PingTimer::AnswerBy(_) if config.ping.is_none() => {
                    return Err(format!("{id:?} awaits a PING answer with pings off"));
                }
                _ => {}
            }
            if let Some(deadline) = conn.ping.deadline() {
                if !self.pings.contains(&(deadline, id)) {
                    return Err(format!("{id:?} missing from the ping set"));
                }
            }
        }
        let timed = self.conns.values().filter(|conn| conn.ping.deadline().is_some()).count();
        if self.pings.len() != timed {
            return Err(format!("ping set holds {} entries for {timed} connections", self.pings.len()));
        }
        let indexed_available = self.conns.values().filter(|conn| conn.available_as.is_some()).count();
        if self.available.len() != indexed_available {
            return Err(format!(
                "available set holds {} entries for {indexed_available} connections",
                self.available.len()
            ));
        }
        let indexed_idle = self.conns.values().filter(|conn| conn.idle_deadline.is_some()).count();
        if self.idle.len() != indexed_idle {
            return Err(format!("idle set holds {} entries for {indexed_idle} connections", self.idle.len()));
        }
        if (connecting, serving, running_total) != (self.connecting, self.serving, self.active) {
            return Err(format!(
                "counted {connecting} connecting, {serving} serving, {running_total} running; recorded {}, {}, {}",
                self.connecting, self.serving, self.active
            ));
        }
        if self.connecting > config.max_connecting {
            return Err(format!("{} connecting, limit {}", self.connecting, config.max_connecting));
        }
        if self.conns.len() > config.max_connections {
            return Err(format!("{} connections, limit {}", self.conns.len(), config.max_connections));
        }
        Ok(())
    }

    fn check_streams(&self) -> Result<(), String> {
        let (mut running, mut queued, mut retried) = (0, 0, 0);
        for (stream, slot) in &self.streams {
            match *slot {
                StreamSlot::Running { conn, index, .. } => {
                    running += 1;
                    let listed = self.conns.get(&conn).and_then(|c| c.streams.get(index as usize));
                    if listed != Some(stream) {
                        return Err(format!(
                            "{stream:?} recorded on {conn:?}[{index}], which holds {listed:?}"
                        ));
                    }
                }
                StreamSlot::Queued { retried: false, .. } => queued += 1,
                StreamSlot::Queued { retried: true, .. } => retried += 1,
            }
        }
        if running != self.active {
            return Err(format!("{running} streams running, {} recorded", self.active));
        }
        self.check_queue("queue", &self.queue, queued, false)?;
        self.check_queue("retry queue", &self.retries, retried, true)
    }

    fn check_queue<T: Copy>(
        &self,
        name: &str,
        queue: &WaitQueue<T>,
        expected: usize,
        retried: bool,
    ) -> Result<(), String> {
        let mut seen = HashSet::new();
        for entry in queue.entries().filter(|entry| is_queued(&self.streams, entry)) {
            if !seen.insert(entry.stream) {
                return Err(format!("{:?} waits twice in the {name}", entry.stream));
            }
            if !matches!(self.streams.get(&entry.stream), Some(&StreamSlot::Queued { retried: r, .. }) if r == retried)
            {
                return Err(format!("{:?} waits in the {name} but is not recorded there", entry.stream));
            }
        }
        if seen.len() != expected || queue.len() != expected {
            return Err(format!(
                "{name}: {expected} streams recorded waiting, {} live entries, count says {}",
                seen.len(),
                queue.len()
            ));
        }
        let bound = 2 * queue.len() + WaitQueue::<T>::compact_slack() + 1;
        if queue.stored() > bound {
            return Err(format!(
                "{name} holds {} entries for {} waiting streams",
                queue.stored(),
                queue.len()
            ));
        }
        Ok(())
    }

    fn check_waiting(&self) -> Result<(), String> {
        if !self.queue.is_empty() && !self.available.is_empty() {
            return Err(format!("{} streams wait while a connection has a free slot", self.queue.len()));
        }
        if self.queue.len() > self.config.max_queued {
            return Err(format!("{} streams queued, limit {}", self.queue.len(), self.config.max_queued));
        }
        // No stream waits while a connection could be opened for it.
        let expected = self.connecting * self.config.max_streams_per_connection as usize;
        if self.waiting() > expected && self.may_open() {
            return Err(format!(
                "{} streams wait, {} connections opening, and no more opened",
                self.waiting(),
                self.connecting
            ));
        }
        if self.waiting() > 0 && self.is_backend_down() {
            return Err(format!("{} streams wait on a backend known to be down", self.waiting()));
        }
        Ok(())
    }
}
