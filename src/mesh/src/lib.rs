//! Augur's peer mesh: hosts negotiate moves with each other; there is no central controller.
//!
//! Every message is an authenticated frame ([`frame`]: HMAC-SHA256 with the operator's
//! [`MeshKey`], a clock-skew bound and a replay window), so a host without the key is not
//! heard, and a reply is tied to the request it answers. A target keeps a [`Ledger`] of its
//! capacity: its own forecast, VMs that arrived, and reservations under leases.
//!
//! # Negotiating a move (protocol version 1)
//!
//! ```text
//!  source                          target A                     target B
//!    |---- Offer(vm, forecast) ------->|                             |
//!    |---- Offer(vm, forecast) ----------------------------------->  |
//!    |<--- Bid(headroom 0.31) ---------|                             |
//!    |<--- Decline("cpu at 900 s would reach 93%") ------------------|
//!    |---- Reserve(offer, lease 60 s)->|   holds the room; checks   |
//!    |<--- Granted(lease 7, 60 s) -----|   again against every live |
//!    |                                 |   reservation               |
//!    |==== live migration ============>|                             |
//!    |---- Commit(lease 7) ----------->|   the VM counts as its own  |
//!    |<--- Committed(7) ---------------|                             |
//! ```
//! On failure the source sends `Release(lease)` instead (and the VM keeps running where it is);
//! if the source dies or the network parts, the lease runs out and the room is free again. A
//! source whose Reserve got no answer, or a garbled one, sends `Withdraw(offer)` before it asks
//! the next bidder, so a grant that was lost on the way does not hold room until its lease ends.
//! While a move goes on that the target cannot see (a libvirt migration), the source renews the
//! lease every third of it with `Renew(lease)`; a microVM's target holds the room itself while
//! the VM arrives, and commits it once the VM runs.
//! A target grants a reservation only if its forecast, every live reservation and the new VM
//! together stay within its limit at every horizon, under one lock, so concurrent offers never
//! double-book; a bid alone reserves nothing.
//!
//! # A source's states for one VM
//!
//! ```text
//!  Idle ──offer──► Bidding ──best bid──► Reserving ──granted──► Migrating ──ok──► Committed
//!                     │                     │ refused: next bidder     │
//!                     └─no bids──► Failed ◄─┴─ none left               └─fail──► Released (VM stays)
//! ```

#![forbid(unsafe_code)]

pub mod channel;
pub mod frame;
mod key;
pub mod ledger;
pub mod membership;
pub mod message;
pub mod negotiate;
pub mod node;

pub use channel::SealedStream;
pub use key::{KeyError, MeshKey, MIN_KEY_BYTES};
pub use ledger::{Ledger, LedgerError, Reservation};
pub use membership::{MemberId, Members};
pub use message::{Demand, Envelope, HorizonDemand, HostId, LeaseId, Message, Offer, PeerInfo};
pub use negotiate::{commit, negotiate, release, renew, BidOutcome, Grant, Negotiation, Peer};
pub use node::{MeshError, Node};
