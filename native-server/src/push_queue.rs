//! One socket's bounded queue of pushes from the hub.
//!
//! Many producers (the dispatcher, queue pumps, revocations) and one consumer (the socket's
//! task). When it is full the socket is a slow consumer: the push is dropped, the queue says
//! so once, and the socket closes with 4008 and resumes with `since`; no producer ever waits.
//!
//! Written here rather than taken from tokio because of what an idle socket costs: tokio's
//! bounded mpsc allocates a cache-padded channel and a first block of 32 slots for every
//! socket up front (about 2 KB); this queue holds nothing while it is empty, and the consumer
//! takes everything queued in one step, which is what a socket writing batches wants.

use crate::hub::Push;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Mutex;
use std::task::{Poll, Waker};

/// What the consumer gets from [`PushQueue::next`].
#[derive(Debug)]
pub enum Pushed {
    /// Everything queued since the last call, in order.
    Batch(VecDeque<Push>),
    /// The queue overflowed: the socket is a slow consumer and should close.
    Slow,
}

/// A bounded multi-producer, single-consumer queue of [`Push`]es.
#[derive(Debug)]
pub struct PushQueue {
    state: Mutex<State>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<Push>,
    slow: bool,
    waker: Option<Waker>,
}

impl State {
    /// Remembers whom to wake on the next push or overflow.
    fn park(&mut self, waker: &Waker) {
        match &mut self.waker {
            Some(w) => w.clone_from(waker),
            None => self.waker = Some(waker.clone()),
        }
    }
}

impl PushQueue {
    /// An empty queue that holds at most `capacity` pushes (at least one).
    pub fn new(capacity: usize) -> PushQueue {
        PushQueue {
            state: Mutex::new(State::default()),
            capacity: capacity.max(1),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A producer that panicked mid-push leaves a valid VecDeque: keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a push without waiting. Returns false when the queue was full (or had already
    /// overflowed): the push is dropped and the socket is marked slow.
    pub fn push(&self, push: Push) -> bool {
        let (accepted, waker) = {
            let mut st = self.state();
            if st.slow {
                return false;
            }
            let accepted = st.items.len() < self.capacity;
            if accepted {
                st.items.push_back(push);
            } else {
                st.slow = true;
                st.items = VecDeque::new();
            }
            (accepted, st.waker.take())
        };
        if let Some(w) = waker {
            w.wake();
        }
        accepted
    }

    /// True once the queue has overflowed.
    pub fn is_slow(&self) -> bool {
        self.state().slow
    }

    /// Waits until something is queued or the queue overflowed. A batch leaves the queue
    /// empty and without an allocation.
    pub async fn next(&self) -> Pushed {
        poll_fn(|cx| {
            let mut st = self.state();
            if st.slow {
                return Poll::Ready(Pushed::Slow);
            }
            if !st.items.is_empty() {
                return Poll::Ready(Pushed::Batch(std::mem::take(&mut st.items)));
            }
            st.park(cx.waker());
            Poll::Pending
        })
        .await
    }

    /// Waits until the queue overflows.
    pub async fn slow(&self) {
        poll_fn(|cx| {
            let mut st = self.state();
            if st.slow {
                return Poll::Ready(());
            }
            st.park(cx.waker());
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Wake};

    fn close(code: u16) -> Push {
        Push::Close {
            code,
            reason: "test",
        }
    }

    fn codes(batch: Pushed) -> Vec<u16> {
        match batch {
            Pushed::Batch(items) => items
                .into_iter()
                .map(|p| match p {
                    Push::Close { code, .. } => code,
                    other => panic!("unexpected {other:?}"),
                })
                .collect(),
            Pushed::Slow => panic!("unexpected slow"),
        }
    }

    #[derive(Default)]
    struct CountingWaker(AtomicUsize);
    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A waker that counts its wake-ups, and the counter.
    fn counting_waker() -> (Waker, Arc<CountingWaker>) {
        let counter = Arc::new(CountingWaker::default());
        (Waker::from(counter.clone()), counter)
    }

    #[test]
    fn hands_over_everything_queued_in_order_and_keeps_nothing() {
        let q = PushQueue::new(8);
        assert!(q.push(close(1)));
        assert!(q.push(close(2)));
        assert_eq!(codes(q.next().now_or_never().expect("ready")), vec![1, 2]);
        assert!(q.state().items.capacity() == 0);
        assert!(q.next().now_or_never().is_none());
    }

    #[test]
    fn overflow_marks_the_socket_slow_once_and_drops_what_was_queued() {
        let q = PushQueue::new(2);
        assert!(q.push(close(1)));
        assert!(q.push(close(2)));
        assert!(!q.push(close(3)));
        assert!(q.is_slow());
        assert!(!q.push(close(4)));
        assert!(matches!(q.next().now_or_never(), Some(Pushed::Slow)));
        assert!(q.slow().now_or_never().is_some());
        assert_eq!(q.state().items.len(), 0);
    }

    #[test]
    fn a_push_wakes_the_waiting_consumer() {
        let q = PushQueue::new(4);
        let (waker, counter) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut next = Box::pin(q.next());
        assert!(next.as_mut().poll(&mut cx).is_pending());
        q.push(close(7));
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        match next.as_mut().poll(&mut cx) {
            Poll::Ready(batch) => assert_eq!(codes(batch), vec![7]),
            Poll::Pending => panic!("still pending after a push"),
        }
    }

    #[test]
    fn overflow_wakes_a_consumer_waiting_for_slow() {
        let q = PushQueue::new(1);
        let (waker, counter) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut slow = Box::pin(q.slow());
        assert!(slow.as_mut().poll(&mut cx).is_pending());
        q.push(close(1));
        assert!(slow.as_mut().poll(&mut cx).is_pending());
        q.push(close(2));
        assert!(counter.0.load(Ordering::SeqCst) >= 1);
        assert!(slow.as_mut().poll(&mut cx).is_ready());
    }
}
