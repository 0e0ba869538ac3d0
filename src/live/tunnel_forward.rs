//! Tunnelled packets on AF_PACKET: each inner flow to one worker, in time order.
//!
//! The kernel's fanout spreads packets over the sockets by their outer headers. For plain
//! traffic both directions of a flow share those, but not inside a tunnel: a VXLAN endpoint picks
//! the outer UDP source port per direction, so a DNS query and its response can reach two
//! different workers, which would then each see half a conversation. A packet that came through
//! a tunnel is therefore handed to the worker its inner flow hashes to (itself included), and
//! every worker holds such packets for [`HOLD_NS`] and processes them in packet-time order, so
//! that a query read late from one ring still comes before its response read early from another.
//! The queues and the hold are bounded; when full, a packet is processed where it is (counted in
//! `tunnel_forward_full`), never dropped.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::worker::{PacketMeta, Worker};

/// How long a tunnelled packet waits for those read later from other rings.
pub const HOLD_NS: i64 = 300_000_000;
/// Packets a worker's inbox holds.
pub const QUEUE: usize = 16_384;
/// Packets a worker holds for reordering.
const HELD_MAX: usize = 65_536;

pub struct Forwarded {
    pub meta: PacketMeta,
    pub payload: Vec<u8>,
}

struct Held(Forwarded);

impl PartialEq for Held {
    fn eq(&self, o: &Held) -> bool {
        self.key() == o.key()
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, o: &Held) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Held {
    fn cmp(&self, o: &Held) -> std::cmp::Ordering {
        self.key().cmp(&o.key())
    }
}
impl Held {
    fn key(&self) -> (i64, u64) {
        (self.0.meta.ts_ns, self.0.meta.pos.seq)
    }
}

/// One AF_PACKET worker's end of the forwarding: the peers' inboxes and its own, and its hold.
pub struct TunnelForward {
    index: usize,
    peers: Vec<Sender<Forwarded>>,
    inbox: Receiver<Forwarded>,
    held: BinaryHeap<Reverse<Held>>,
    /// Tunnelled packets handed to another worker, and processed in place because a queue or
    /// the hold was full.
    pub forwarded: u64,
    pub full: u64,
}

impl TunnelForward {
    /// The ends for `n` workers.
    pub fn group(n: usize) -> Vec<TunnelForward> {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..n).map(|_| crossbeam_channel::bounded(QUEUE)).unzip();
        rxs.into_iter()
            .enumerate()
            .map(|(index, inbox)| TunnelForward {
                index,
                peers: txs.clone(),
                inbox,
                held: BinaryHeap::new(),
                forwarded: 0,
                full: 0,
            })
            .collect()
    }

    /// Takes a tunnelled packet (`false`: the caller processes it now, as any other).
    pub fn take(&mut self, meta: PacketMeta, payload: &[u8], hash: u64) -> bool {
        if meta.tunnel.is_none() {
            return false;
        }
        let target = (hash % self.peers.len() as u64) as usize;
        match self.peers[target].try_send(Forwarded { meta, payload: payload.to_vec() }) {
            Ok(()) => {
                self.forwarded += u64::from(target != self.index);
                true
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.full += 1;
                false
            }
        }
    }

    /// Moves what arrived into the hold and processes, in packet-time order, what has waited
    /// long enough as of `now_ns` (everything with `now_ns == i64::MAX`).
    pub fn release(&mut self, now_ns: i64, worker: &mut Worker) {
        while let Ok(f) = self.inbox.try_recv() {
            if self.held.len() >= HELD_MAX {
                self.full += 1;
                worker.process_contained(&f.meta, &f.payload);
                continue;
            }
            self.held.push(Reverse(Held(f)));
        }
        while let Some(Reverse(h)) = self.held.peek() {
            if h.0.meta.ts_ns > now_ns.saturating_sub(HOLD_NS) {
                break;
            }
            let Some(Reverse(Held(f))) = self.held.pop() else { break };
            worker.process_contained(&f.meta, &f.payload);
        }
    }
}
