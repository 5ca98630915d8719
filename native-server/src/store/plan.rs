//! What a queue read does, decided once for every store: which messages it answers and in
//! what order, which transactions it opens and until when, and where the consumer's position
//! moves. A store runs the queries around it (and its own locking); this decides.

use super::QueuedMessage;
use serde_json::Value;

/// A message a read took from the store: its row id, its log position and its body.
pub(super) struct Taken {
    /// Its row id: positions and transactions refer to it.
    pub id: i64,
    /// The log position of its posting.
    pub seq: u64,
    /// Its body.
    pub data: Value,
}

/// A consumer transaction a read opens: the message stays hidden from that consumer until it
/// is committed or `expires` passes.
pub(super) struct Opened {
    /// The transaction id the client commits with.
    pub id: String,
    /// The message's row id.
    pub message: i64,
    /// When it times out into a redelivery, ms since the epoch.
    pub expires: i64,
}

/// A consumer read, planned.
pub(super) struct ConsumerRead {
    /// Transactions to open.
    pub opened: Vec<Opened>,
    /// The consumer's position afterwards.
    pub position: i64,
    /// The answer, in order.
    pub messages: Vec<QueuedMessage>,
}

/// How many fresh messages a read takes after the `redelivered` ones.
pub(super) fn fresh_limit(limit: usize, redelivered: usize) -> usize {
    limit.saturating_sub(redelivered)
}

/// Plans a consumer read: messages whose transaction timed out come first, in message order,
/// then fresh ones after the consumer's `position`; with a `timeout_ms`, each in a new
/// transaction (its id in the message's `transaction`), and without, none (nothing can time
/// out then, so nothing is redelivered). The position moves past the last fresh message.
pub(super) fn consumer_read(
    mut redelivered: Vec<Taken>,
    fresh: Vec<Taken>,
    position: i64,
    timeout_ms: u64,
    now: i64,
) -> ConsumerRead {
    redelivered.sort_by_key(|t| t.id);
    let expires = now.saturating_add(i64::try_from(timeout_ms).unwrap_or(i64::MAX));
    let mut plan = ConsumerRead {
        opened: Vec::new(),
        position: fresh.last().map_or(position, |t| t.id.max(position)),
        messages: Vec::with_capacity(redelivered.len() + fresh.len()),
    };
    for Taken { id, seq, mut data } in redelivered.into_iter().chain(fresh) {
        if timeout_ms > 0 {
            let tx = uuid::Uuid::now_v7().to_string();
            data["transaction"] = Value::String(tx.clone());
            plan.opened.push(Opened {
                id: tx,
                message: id,
                expires,
            });
        }
        plan.messages.push(QueuedMessage { seq, message: data });
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn taken(id: i64) -> Taken {
        Taken {
            id,
            seq: id as u64 * 10,
            data: json!({"n": id}),
        }
    }

    #[test]
    fn redeliveries_come_first_in_message_order_then_fresh_messages() {
        let plan = consumer_read(
            vec![taken(4), taken(2)],
            vec![taken(7), taken(8)],
            6,
            500,
            1_000,
        );
        let order: Vec<u64> = plan.messages.iter().map(|m| m.seq).collect();
        assert_eq!(order, [20, 40, 70, 80]);
        assert_eq!(plan.position, 8);
        assert_eq!(plan.opened.len(), 4);
        for (opened, message) in plan.opened.iter().zip(&plan.messages) {
            assert_eq!(opened.expires, 1_500);
            assert_eq!(message.message["transaction"], json!(opened.id));
        }
    }

    #[test]
    fn without_a_timeout_nothing_is_opened_and_the_position_moves() {
        let plan = consumer_read(Vec::new(), vec![taken(3)], 1, 0, 1_000);
        assert!(plan.opened.is_empty());
        assert_eq!(plan.messages[0].message.get("transaction"), None);
        assert_eq!(plan.position, 3);
        let idle = consumer_read(Vec::new(), Vec::new(), 9, 0, 1_000);
        assert_eq!((idle.position, idle.messages.len()), (9, 0));
    }

    #[test]
    fn expiry_never_overflows_and_limits_never_underflow() {
        let plan = consumer_read(Vec::new(), vec![taken(1)], 0, u64::MAX, i64::MAX - 5);
        assert_eq!(plan.opened[0].expires, i64::MAX);
        assert_eq!(fresh_limit(10, 3), 7);
        assert_eq!(fresh_limit(2, 5), 0);
    }
}
