//! The source's side of a move: ask every candidate for a bid, reserve with the best bidder
//! (falling back to the next if it refuses), and later commit or release the lease.

use crate::message::{HostId, LeaseId, Message, Offer};
use crate::node::{MeshError, Node};
use std::net::SocketAddr;
use std::time::Duration;

/// A peer the source may offer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: HostId,
    pub addr: SocketAddr,
}

/// What one candidate answered to the offer.
#[derive(Debug, Clone, PartialEq)]
pub enum BidOutcome {
    Bid { headroom: f64 },
    Declined { reason: String },
    Failed { reason: String },
}

impl std::fmt::Display for BidOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BidOutcome::Bid { headroom } => {
                write!(f, "bid, {:.0}% of its capacity left free", headroom * 100.0)
            }
            BidOutcome::Declined { reason } => write!(f, "declined: {reason}"),
            BidOutcome::Failed { reason } => write!(f, "no bid: {reason}"),
        }
    }
}

/// A lease a target granted.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub peer: Peer,
    pub lease: LeaseId,
    pub lease_ms: u64,
}

/// The record of one negotiation: every answer, and the grant if there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct Negotiation {
    pub offer_id: u64,
    pub vm: String,
    pub bids: Vec<(HostId, BidOutcome)>,
    /// Bidders that refused the reservation, in the order asked, with their reasons.
    pub refusals: Vec<(HostId, String)>,
    pub grant: Option<Grant>,
}

fn unexpected(msg: &Message) -> String {
    format!("unexpected answer {msg:?}")
}

/// Offers `offer` to `peers` at once and reserves room with the best bidder.
pub async fn negotiate(
    node: &Node,
    offer: Offer,
    peers: &[Peer],
    lease: Duration,
    timeout: Duration,
) -> Negotiation {
    let asks = peers.iter().map(|p| {
        let msg = Message::Offer(offer.clone());
        async move { (p.clone(), node.request(p.addr, &p.id, msg, timeout).await) }
    });
    let answers = futures_join_all(asks).await;
    let mut negotiation = Negotiation {
        offer_id: offer.offer_id,
        vm: offer.vm.clone(),
        bids: Vec::new(),
        refusals: Vec::new(),
        grant: None,
    };
    let mut bidders: Vec<(Peer, f64)> = Vec::new();
    for (peer, answer) in answers {
        let outcome = match answer.map(|e| e.msg) {
            Ok(Message::Bid { offer_id, headroom })
                if offer_id == offer.offer_id && headroom.is_finite() =>
            {
                bidders.push((peer.clone(), headroom));
                BidOutcome::Bid { headroom }
            }
            Ok(Message::Decline { reason, .. }) => BidOutcome::Declined { reason },
            Ok(other) => BidOutcome::Failed {
                reason: unexpected(&other),
            },
            Err(e) => BidOutcome::Failed {
                reason: e.to_string(),
            },
        };
        negotiation.bids.push((peer.id.clone(), outcome));
    }
    // The most room left after the move first; ties by name, so every run picks the same.
    bidders.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.id.cmp(&b.0.id)));
    for (peer, _) in bidders {
        let msg = Message::Reserve {
            offer: offer.clone(),
            lease_ms: lease.as_millis() as u64,
        };
        match node
            .request(peer.addr, &peer.id, msg, timeout)
            .await
            .map(|e| e.msg)
        {
            Ok(Message::Granted {
                offer_id,
                lease,
                lease_ms,
            }) if offer_id == offer.offer_id => {
                negotiation.grant = Some(Grant {
                    peer,
                    lease,
                    lease_ms,
                });
                break;
            }
            Ok(Message::Refused { reason, .. }) => negotiation.refusals.push((peer.id, reason)),
            // The target may have granted all the same (a late or garbled answer): before
            // trying the next bidder, ask it to free whatever it holds for this offer.
            Ok(other) => {
                withdraw(node, &peer, offer.offer_id, timeout).await;
                negotiation.refusals.push((peer.id, unexpected(&other)));
            }
            Err(e) => {
                withdraw(node, &peer, offer.offer_id, timeout).await;
                negotiation.refusals.push((peer.id, e.to_string()));
            }
        }
    }
    negotiation
}

/// Best effort: if the target cannot be told, its lease runs out on its own.
async fn withdraw(node: &Node, peer: &Peer, offer_id: u64, timeout: Duration) {
    let msg = Message::Withdraw { offer_id };
    if let Err(error) = node.request(peer.addr, &peer.id, msg, timeout).await {
        tracing::debug!(peer = %peer.id, offer_id, %error, "withdraw not delivered");
    }
}

/// Runs every future at once (on this task) and returns their outputs in order.
async fn futures_join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in pinned.iter_mut().zip(results.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

/// Tells the target the VM arrived.
pub async fn commit(node: &Node, grant: &Grant, timeout: Duration) -> Result<(), String> {
    match node
        .request(
            grant.peer.addr,
            &grant.peer.id,
            Message::Commit { lease: grant.lease },
            timeout,
        )
        .await
        .map(|e| e.msg)
    {
        Ok(Message::Committed { lease }) if lease == grant.lease => Ok(()),
        Ok(other) => Err(unexpected(&other)),
        Err(e) => Err(e.to_string()),
    }
}

/// Asks the target to hold the room another lease from now, while a move it cannot see (a
/// libvirt migration) goes on past the lease.
pub async fn renew(node: &Node, grant: &Grant, timeout: Duration) -> Result<(), String> {
    let msg = Message::Renew {
        lease: grant.lease,
        lease_ms: grant.lease_ms,
    };
    match node
        .request(grant.peer.addr, &grant.peer.id, msg, timeout)
        .await
        .map(|e| e.msg)
    {
        Ok(Message::Renewed { lease, .. }) if lease == grant.lease => Ok(()),
        Ok(Message::Refused { reason, .. }) => Err(reason),
        Ok(other) => Err(unexpected(&other)),
        Err(e) => Err(e.to_string()),
    }
}

/// Tells the target the move is off. If it cannot be told, the lease runs out on its own.
pub async fn release(node: &Node, grant: &Grant, timeout: Duration) -> Result<(), MeshError> {
    node.request(
        grant.peer.addr,
        &grant.peer.id,
        Message::Release { lease: grant.lease },
        timeout,
    )
    .await
    .map(|_| ())
}
