//! One timer for all of a node's sockets.
//!
//! A socket's session asks to be woken at some time: a request's deadline, the next ping, its
//! token's expiry. A tokio `Sleep` per socket is 112 B in every socket's task, idle or not,
//! and is reset on every message, since the ping's time moves with each one. Here a socket
//! sets an alarm only when it wants waking sooner than the one it has set. An alarm that rings
//! early finds nothing due, and the socket sets the next. One task, [`Alarms::ring`], rings
//! them all, through the wake every socket already has for its pushers.

use crate::net::ws::socket::Socket;
use gridsocket_core::Instant;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Alarms rung under one hold of the lock; the rest wait for the next, so that sockets setting
/// alarms are never held up long when many ring at once.
const RUNG_AT_ONCE: usize = 1024;

/// The node's alarms, soonest first.
#[derive(Default)]
pub struct Alarms {
    /// Keyed by time, then by the socket's address (unique while the socket lives, and a
    /// socket takes its alarm off before it goes: [`Alarm`]'s drop).
    due: Mutex<BTreeMap<(Instant, usize), Weak<Socket>>>,
    /// Told when an alarm is set sooner than every other, so the ringer sleeps less.
    sooner: Notify,
}

impl Alarms {
    fn due(&self) -> MutexGuard<'_, BTreeMap<(Instant, usize), Weak<Socket>>> {
        self.due.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rings every alarm as its time comes, until `cancel`.
    pub async fn ring(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            let next = self.ring_due(Instant::now());
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => {}
                _ = self.sooner.notified() => {}
                _ = cancel.cancelled() => return,
            }
        }
    }

    /// Wakes the sockets whose alarms are due at `now`; returns when the next one is.
    fn ring_due(&self, now: Instant) -> Option<Instant> {
        let mut rung = Vec::new();
        loop {
            let next = {
                let mut due = self.due();
                while rung.len() < RUNG_AT_ONCE {
                    match due.first_entry() {
                        Some(entry) if entry.key().0 <= now => rung.push(entry.remove()),
                        _ => break,
                    }
                }
                due.first_key_value().map(|(&(at, _), _)| at)
            };
            // Outside the lock: a woken socket may set its next alarm at once.
            for socket in rung.drain(..) {
                if let Some(socket) = socket.upgrade() {
                    socket.wake();
                }
            }
            match next {
                Some(at) if at <= now => continue,
                next => return next,
            }
        }
    }

    fn set(&self, id: usize, socket: Weak<Socket>, at: Instant, replacing: Option<Instant>) {
        let soonest = {
            let mut due = self.due();
            if let Some(old) = replacing {
                due.remove(&(old, id));
            }
            due.insert((at, id), socket);
            due.first_key_value()
                .is_some_and(|(&key, _)| key == (at, id))
        };
        if soonest {
            self.sooner.notify_one();
        }
    }

    fn unset(&self, id: usize, at: Instant) {
        self.due().remove(&(at, id));
    }

    /// How many alarms are set.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.due().len()
    }
}

/// One socket's alarm: at most one set at a time, taken off when dropped.
pub struct Alarm {
    alarms: Arc<Alarms>,
    /// The socket it wakes; its address is its key among the alarms.
    socket: Weak<Socket>,
    at: Option<Instant>,
}

impl Alarm {
    /// An alarm of `socket`'s, not set.
    pub fn new(alarms: Arc<Alarms>, socket: &Arc<Socket>) -> Self {
        Alarm {
            alarms,
            socket: Arc::downgrade(socket),
            at: None,
        }
    }

    fn id(&self) -> usize {
        self.socket.as_ptr() as usize
    }

    /// Asks to wake the socket by `at`: sets the alarm unless it is set already at or before
    /// `at`. A later time leaves it as it is, to ring early.
    pub fn want(&mut self, at: Option<Instant>) {
        let Some(at) = at else { return };
        if self.at.is_some_and(|set| set <= at) {
            return;
        }
        self.alarms.set(self.id(), self.socket.clone(), at, self.at);
        self.at = Some(at);
    }

    /// True once the alarm's time has passed at `now`; it is then no longer set.
    pub fn rang(&mut self, now: Instant) -> bool {
        let due = self.at.is_some_and(|at| at <= now);
        if due {
            // Rung already, unless a pusher's wake came first.
            self.unset();
        }
        due
    }

    /// Takes the alarm off, if it is set.
    pub fn unset(&mut self) {
        if let Some(at) = self.at.take() {
            self.alarms.unset(self.id(), at);
        }
    }
}

impl Drop for Alarm {
    fn drop(&mut self) {
        self.unset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BacklogLimits;
    use crate::metrics::Metrics;
    use crate::net::ws::socket::Bounds;
    use gridsocket_core::{ServerConfig, ServerSession};
    use std::time::Duration;

    fn socket() -> Arc<Socket> {
        let session = ServerSession::accept(ServerConfig::default(), Instant::now());
        let limits = BacklogLimits {
            events: 8,
            bytes: 1 << 16,
            total_bytes: 1 << 20,
        };
        let bounds = Bounds::new(limits, usize::MAX, Arc::new(Metrics::default()));
        Arc::new(Socket::new(session, None, bounds))
    }

    #[test]
    fn a_socket_holds_one_alarm_and_only_a_sooner_time_moves_it() {
        let alarms = Arc::new(Alarms::default());
        let s = socket();
        let t0 = Instant::now();
        let mut alarm = Alarm::new(alarms.clone(), &s);
        alarm.want(Some(t0 + Duration::from_secs(10)));
        alarm.want(Some(t0 + Duration::from_secs(20)));
        assert_eq!(alarms.len(), 1);
        assert_eq!(
            alarms.ring_due(t0),
            Some(t0 + Duration::from_secs(10)),
            "a later time leaves the alarm where it was"
        );
        alarm.want(Some(t0 + Duration::from_secs(5)));
        assert_eq!(alarms.len(), 1);
        assert_eq!(alarms.ring_due(t0), Some(t0 + Duration::from_secs(5)));
        assert!(!alarm.rang(t0 + Duration::from_secs(4)));
        assert!(alarm.rang(t0 + Duration::from_secs(5)));
        assert_eq!(alarms.len(), 0, "a rung alarm is no longer set");
        alarm.want(Some(t0 + Duration::from_secs(30)));
        drop(alarm);
        assert_eq!(alarms.len(), 0, "a dropped alarm is taken off");
    }

    #[test]
    fn due_alarms_wake_their_sockets_and_later_ones_wait() {
        let alarms = Arc::new(Alarms::default());
        let t0 = Instant::now();
        let sockets: Vec<_> = (0..3000).map(|_| socket()).collect();
        let mut set: Vec<_> = sockets
            .iter()
            .map(|s| Alarm::new(alarms.clone(), s))
            .collect();
        for (i, alarm) in set.iter_mut().enumerate() {
            alarm.want(Some(t0 + Duration::from_millis(i as u64 % 3)));
        }
        // Past RUNG_AT_ONCE: the first two times' 2,000 ring in more than one hold of the lock.
        let next = alarms.ring_due(t0 + Duration::from_millis(1));
        assert_eq!(next, Some(t0 + Duration::from_millis(2)));
        assert_eq!(alarms.len(), 1000);
        let woken = sockets.iter().filter(|s| s.take_wake()).count();
        assert_eq!(woken, 2000);
        for (i, alarm) in set.iter_mut().enumerate() {
            assert_eq!(alarm.rang(t0 + Duration::from_millis(1)), i % 3 < 2);
        }
        drop(set);
        assert_eq!(alarms.len(), 0);
    }
}
