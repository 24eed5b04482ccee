//! A target host's book of capacity: its own forecast demand, the VMs it has agreed to take, and
//! the reservations it holds for sources, each with a lease. A reservation is only granted if the
//! host's forecast, every live reservation and the new VM together stay within the limit at every
//! horizon, so two sources offering at once can never both be granted the same room.

use crate::message::{Demand, HorizonDemand, HostId, LeaseId, Offer};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Reservations one source may hold at once, and all sources together.
pub const MAX_PER_SOURCE: usize = 16;
pub const MAX_RESERVATIONS: usize = 256;
/// How long an arrived VM is counted before the host's own forecast must have taken it over
/// (a VM that never shows up stops holding room).
pub const ARRIVAL_GRACE: Duration = Duration::from_secs(1800);

/// A reservation held for a source.
#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    pub lease: LeaseId,
    pub source: HostId,
    pub offer: Offer,
    pub expires: Instant,
}

/// Why the ledger said no.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LedgerError {
    #[error("the offer is malformed: {0}")]
    BadOffer(String),
    #[error("{resource} at {horizon_s} s would reach {share:.0}% of capacity (limit {limit:.0}%)")]
    NoRoom {
        resource: &'static str,
        horizon_s: u32,
        share: f64,
        limit: f64,
    },
    #[error("this host is draining (maintenance): it takes no VMs")]
    Draining,
    #[error("this host has not forecast its own VMs yet (it just started): it takes no VMs")]
    NotReady,
    #[error("{0}")]
    Busy(String),
    #[error("no reservation {0} (it expired or was released)")]
    UnknownLease(LeaseId),
    #[error("reservation {lease} belongs to {owner}, not {asker}")]
    NotYours {
        lease: LeaseId,
        owner: HostId,
        asker: HostId,
    },
}

#[derive(Debug)]
pub struct Ledger {
    capacity: Demand,
    /// The share of capacity the host lets its predicted demand reach.
    limit: f64,
    /// The host's own forecast for its current VMs, by horizon; until the first one, the host
    /// does not know its own load and books nothing.
    own: Option<Vec<HorizonDemand>>,
    reservations: BTreeMap<LeaseId, Reservation>,
    /// VMs committed to this host that its own forecast does not hold yet, and when.
    arrived: BTreeMap<String, (Offer, Instant)>,
    /// Leases committed lately, with their sources: a second commit of one (the target's own,
    /// then the source's) is not an error.
    committed: BTreeMap<LeaseId, (HostId, Offer, Instant)>,
    next_lease: LeaseId,
    draining: bool,
}

/// The entry for this horizon, else the nearest longer one, else the longest there is.
fn entry_at(forecast: &[HorizonDemand], horizon_s: u32) -> Option<&HorizonDemand> {
    forecast
        .iter()
        .filter(|h| h.horizon_s >= horizon_s)
        .min_by_key(|h| h.horizon_s)
        .or_else(|| forecast.iter().max_by_key(|h| h.horizon_s))
}

fn upper_at(forecast: &[HorizonDemand], horizon_s: u32) -> Demand {
    entry_at(forecast, horizon_s)
        .map(|h| h.upper)
        .unwrap_or_default()
}

/// Where a ledger's lease numbers start: random, so that after a restart a Commit or Release
/// replayed from before it cannot name a reservation granted since.
fn first_lease() -> LeaseId {
    use rand::TryRngCore;
    rand::rngs::OsRng
        .try_next_u64()
        .unwrap_or_else(|_| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
        .max(1)
}

impl Ledger {
    pub fn new(capacity: Demand, limit: f64) -> Self {
        Self {
            capacity,
            limit,
            own: None,
            reservations: BTreeMap::new(),
            arrived: BTreeMap::new(),
            committed: BTreeMap::new(),
            next_lease: first_lease(),
            draining: false,
        }
    }

    /// The host's fresh forecast of its own VMs; `present` are the VMs it includes, so VMs
    /// that arrived by migration stop being counted twice.
    /// VMs that arrived are dropped once they are `present` in the forecast, or after
    /// [`ARRIVAL_GRACE`].
    pub fn set_own(&mut self, forecast: Vec<HorizonDemand>, present: &[String]) {
        self.own = Some(forecast);
        let now = Instant::now();
        self.committed
            .retain(|_, (_, _, at)| now.saturating_duration_since(*at) < ARRIVAL_GRACE);
        self.arrived.retain(|vm, (_, at)| {
            !present.contains(vm) && now.saturating_duration_since(*at) < ARRIVAL_GRACE
        });
    }

    pub fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
    }

    /// Drops reservations whose lease ran out; returns their leases.
    pub fn expire(&mut self, now: Instant) -> Vec<LeaseId> {
        let gone: Vec<LeaseId> = self
            .reservations
            .values()
            .filter(|r| r.expires <= now)
            .map(|r| r.lease)
            .collect();
        for lease in &gone {
            self.reservations.remove(lease);
        }
        gone
    }

    fn own(&self) -> &[HorizonDemand] {
        self.own.as_deref().unwrap_or_default()
    }

    /// Horizons the book is checked at: the host's own and the offer's.
    fn horizons(&self, offer: &Offer) -> Vec<u32> {
        let mut h: Vec<u32> = self
            .own()
            .iter()
            .chain(&offer.forecast)
            .map(|h| h.horizon_s)
            .collect();
        h.sort_unstable();
        h.dedup();
        h
    }

    /// The smallest share of capacity left free, over resources and horizons, if `offer` were
    /// added to everything already booked; an error names the first resource that would not fit.
    pub fn headroom_with(&self, offer: &Offer, now: Instant) -> Result<f64, LedgerError> {
        offer.validate().map_err(LedgerError::BadOffer)?;
        if self.draining {
            return Err(LedgerError::Draining);
        }
        if self.own.is_none() {
            return Err(LedgerError::NotReady);
        }
        let mut least = f64::INFINITY;
        for horizon in self.horizons(offer) {
            let mut total = upper_at(self.own(), horizon).plus(&upper_at(&offer.forecast, horizon));
            for r in self.reservations.values().filter(|r| r.expires > now) {
                total = total.plus(&upper_at(&r.offer.forecast, horizon));
            }
            for (o, _) in self.arrived.values() {
                total = total.plus(&upper_at(&o.forecast, horizon));
            }
            for ((resource, used), (_, cap)) in
                total.fields().into_iter().zip(self.capacity.fields())
            {
                if cap <= 0.0 {
                    continue;
                }
                let share = used / cap;
                if share > self.limit {
                    return Err(LedgerError::NoRoom {
                        resource,
                        horizon_s: horizon,
                        share: share * 100.0,
                        limit: self.limit * 100.0,
                    });
                }
                least = least.min(self.limit - share);
            }
        }
        Ok(if least.is_finite() { least } else { self.limit })
    }

    /// Holds room for `offer` until `now + lease`.
    pub fn reserve(
        &mut self,
        source: &str,
        offer: Offer,
        lease: Duration,
        now: Instant,
    ) -> Result<Reservation, LedgerError> {
        self.expire(now);
        if offer.is_empty() {
            return Err(LedgerError::BadOffer("it asks for nothing".into()));
        }
        let mine = self
            .reservations
            .values()
            .filter(|r| r.source == source)
            .count();
        if mine >= MAX_PER_SOURCE || self.reservations.len() >= MAX_RESERVATIONS {
            return Err(LedgerError::Busy(format!(
                "too many reservations held ({mine} for {source}, {} in all)",
                self.reservations.len()
            )));
        }
        self.headroom_with(&offer, now)?;
        let id = self.next_lease;
        self.next_lease = self.next_lease.wrapping_add(1).max(1);
        let reservation = Reservation {
            lease: id,
            source: source.to_string(),
            offer,
            expires: now + lease,
        };
        self.reservations.insert(id, reservation.clone());
        Ok(reservation)
    }

    fn owned(
        &self,
        lease: LeaseId,
        source: &str,
        now: Instant,
    ) -> Result<&Reservation, LedgerError> {
        let r = self
            .reservations
            .get(&lease)
            .filter(|r| r.expires > now)
            .ok_or(LedgerError::UnknownLease(lease))?;
        if r.source != source {
            return Err(LedgerError::NotYours {
                lease,
                owner: r.source.clone(),
                asker: source.to_string(),
            });
        }
        Ok(r)
    }

    /// Moves the expiry of live reservation `lease` to `until` (earlier or later); returns the
    /// expiry it had, or `None` if there is no such live reservation. A target holds the room
    /// this way while a VM arrives, however long the transfer takes past the lease.
    pub fn set_expiry(&mut self, lease: LeaseId, until: Instant, now: Instant) -> Option<Instant> {
        let r = self
            .reservations
            .get_mut(&lease)
            .filter(|r| r.expires > now)?;
        Some(std::mem::replace(&mut r.expires, until))
    }

    /// Holds `source`'s live reservation `lease` for `hold` from now, if that is later than it
    /// was held already.
    pub fn renew(
        &mut self,
        lease: LeaseId,
        source: &str,
        hold: Duration,
        now: Instant,
    ) -> Result<(), LedgerError> {
        self.owned(lease, source, now)?;
        if let Some(r) = self.reservations.get_mut(&lease) {
            r.expires = r.expires.max(now + hold);
        }
        Ok(())
    }

    /// The VM arrived: the reservation becomes part of this host's load. Committing a lease
    /// again (the target did on arrival, then its source does) answers as the first time.
    pub fn commit(
        &mut self,
        lease: LeaseId,
        source: &str,
        now: Instant,
    ) -> Result<Offer, LedgerError> {
        if let Some((owner, offer, _)) = self.committed.get(&lease) {
            return if owner == source {
                Ok(offer.clone())
            } else {
                Err(LedgerError::NotYours {
                    lease,
                    owner: owner.clone(),
                    asker: source.to_string(),
                })
            };
        }
        self.owned(lease, source, now)?;
        let r = self
            .reservations
            .remove(&lease)
            .ok_or(LedgerError::UnknownLease(lease))?;
        self.arrived
            .insert(r.offer.vm.clone(), (r.offer.clone(), now));
        self.committed
            .insert(lease, (r.source, r.offer.clone(), now));
        Ok(r.offer)
    }

    /// The move did not happen: frees the room. Releasing twice is not an error.
    pub fn release(
        &mut self,
        lease: LeaseId,
        source: &str,
        now: Instant,
    ) -> Result<(), LedgerError> {
        match self.owned(lease, source, now) {
            Ok(_) => {
                self.reservations.remove(&lease);
                Ok(())
            }
            Err(LedgerError::UnknownLease(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Frees the reservation `source` holds for offer `offer_id`, if any: one it asked for but
    /// never heard granted. Returns its lease.
    pub fn withdraw(&mut self, source: &str, offer_id: u64, now: Instant) -> Option<LeaseId> {
        let lease = self
            .reservations
            .values()
            .find(|r| r.source == source && r.offer.offer_id == offer_id && r.expires > now)?
            .lease;
        self.reservations.remove(&lease);
        Some(lease)
    }

    /// Live reservations.
    pub fn reservations(&self, now: Instant) -> Vec<&Reservation> {
        self.reservations
            .values()
            .filter(|r| r.expires > now)
            .collect()
    }

    pub fn capacity(&self) -> Demand {
        self.capacity
    }

    pub fn limit(&self) -> f64 {
        self.limit
    }

    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Its own forecast, live reservations and arrived VMs, at each of its horizons.
    pub fn booked(&self, now: Instant) -> Vec<HorizonDemand> {
        let horizons: Vec<u32> = if self.own().is_empty() {
            vec![300]
        } else {
            self.own().iter().map(|h| h.horizon_s).collect()
        };
        let forecasts: Vec<&[HorizonDemand]> = std::iter::once(self.own())
            .chain(
                self.reservations
                    .values()
                    .filter(|r| r.expires > now)
                    .map(|r| r.offer.forecast.as_slice()),
            )
            .chain(self.arrived.values().map(|(o, _)| o.forecast.as_slice()))
            .collect();
        horizons
            .into_iter()
            .map(|horizon_s| {
                let (mut mean, mut upper) = (Demand::default(), Demand::default());
                for h in forecasts.iter().filter_map(|f| entry_at(f, horizon_s)) {
                    mean = mean.plus(&h.mean);
                    upper = upper.plus(&h.upper);
                }
                HorizonDemand {
                    horizon_s,
                    mean,
                    upper,
                }
            })
            .collect()
    }

    /// What this host could still take at each of its horizons (capacity × limit − booked);
    /// nothing before it knows its own load.
    pub fn headroom(&self, now: Instant) -> Vec<HorizonDemand> {
        let limit = if self.own.is_some() { self.limit } else { 0.0 };
        let free = |cap: f64, used: f64| (cap * limit - used).max(0.0);
        self.booked(now)
            .into_iter()
            .map(|b| {
                let d = Demand {
                    cpu: free(self.capacity.cpu, b.upper.cpu),
                    memory_mib: free(self.capacity.memory_mib, b.upper.memory_mib),
                    disk_bps: free(self.capacity.disk_bps, b.upper.disk_bps),
                    net_bps: free(self.capacity.net_bps, b.upper.net_bps),
                };
                HorizonDemand {
                    horizon_s: b.horizon_s,
                    mean: d,
                    upper: d,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn offer(id: u64, vm: &str, cpu: f64, mem: f64) -> Offer {
        let d = Demand {
            cpu,
            memory_mib: mem,
            disk_bps: 0.0,
            net_bps: 0.0,
        };
        Offer {
            offer_id: id,
            vm: vm.into(),
            memory_mib: mem as u64,
            vcpus: 1,
            forecast: vec![HorizonDemand {
                horizon_s: 300,
                mean: d,
                upper: d,
            }],
            migration_s: 1.0,
        }
    }

    fn ledger() -> Ledger {
        let mut l = Ledger::new(
            Demand {
                cpu: 10.0,
                memory_mib: 10_000.0,
                disk_bps: 0.0,
                net_bps: 0.0,
            },
            0.8,
        );
        l.set_own(offer(0, "own", 4.0, 2000.0).forecast, &[]);
        l
    }

    #[test]
    fn a_lease_the_target_committed_on_arrival_commits_again_for_its_source() {
        let mut l = ledger();
        let now = Instant::now();
        let r = l
            .reserve(
                "a",
                offer(1, "vm1", 1.0, 100.0),
                Duration::from_secs(60),
                now,
            )
            .unwrap();
        l.commit(r.lease, "a", now).unwrap();
        assert_eq!(l.commit(r.lease, "a", now).unwrap().vm, "vm1");
        assert!(matches!(
            l.commit(r.lease, "b", now),
            Err(LedgerError::NotYours { .. })
        ));
        assert!(l.reservations(now).is_empty());
        // Counted once: 4 of its own and 1 arrived, of 8 allowed.
        assert!((l.headroom(now)[0].upper.cpu - 3.0).abs() < 1e-9);
    }

    #[test]
    fn a_source_withdraws_only_its_own_reservation_for_that_offer() {
        let mut l = ledger();
        let now = Instant::now();
        let lease = Duration::from_secs(60);
        let a = l
            .reserve("a", offer(1, "vm1", 1.0, 100.0), lease, now)
            .unwrap();
        let b = l
            .reserve("b", offer(1, "vm2", 1.0, 100.0), lease, now)
            .unwrap();
        assert_eq!(l.withdraw("a", 2, now), None, "no such offer");
        assert_eq!(l.withdraw("a", 1, now), Some(a.lease));
        assert_eq!(l.withdraw("a", 1, now), None, "once");
        let left: Vec<LeaseId> = l.reservations(now).iter().map(|r| r.lease).collect();
        assert_eq!(left, vec![b.lease]);
    }

    #[test]
    fn a_host_that_has_not_forecast_its_own_load_takes_nothing() {
        let capacity = Demand {
            cpu: 10.0,
            memory_mib: 10_000.0,
            disk_bps: 0.0,
            net_bps: 0.0,
        };
        let mut l = Ledger::new(capacity, 0.8);
        let now = Instant::now();
        let small = offer(1, "vm1", 0.5, 100.0);
        assert_eq!(l.headroom_with(&small, now), Err(LedgerError::NotReady));
        let refused = l.reserve("a", small.clone(), Duration::from_secs(10), now);
        assert_eq!(refused, Err(LedgerError::NotReady));
        assert!(l.headroom(now).iter().all(|h| h.upper.cpu == 0.0));
        // Once it knows its VMs use 7 of 10 CPUs, only what fits under 8 is granted.
        l.set_own(offer(0, "own", 7.0, 2000.0).forecast, &[]);
        assert!(l.reserve("a", small, Duration::from_secs(10), now).is_ok());
        assert!(matches!(
            l.headroom_with(&offer(2, "vm2", 1.0, 100.0), now),
            Err(LedgerError::NoRoom { .. })
        ));
    }

    #[test]
    fn a_held_reservation_outlives_its_lease_and_keeps_its_room() {
        let mut l = ledger();
        let t0 = Instant::now();
        let r = l
            .reserve(
                "a",
                offer(1, "vm1", 3.0, 100.0),
                Duration::from_secs(10),
                t0,
            )
            .unwrap();
        let held_until = t0 + Duration::from_secs(600);
        assert_eq!(
            l.set_expiry(r.lease, held_until, t0 + Duration::from_secs(1)),
            Some(t0 + Duration::from_secs(10))
        );
        // Past the lease, the room is still taken: a second offer of the same size does not fit.
        let later = t0 + Duration::from_secs(20);
        assert!(l
            .reserve(
                "b",
                offer(2, "vm2", 3.0, 100.0),
                Duration::from_secs(10),
                later
            )
            .is_err());
        assert_eq!(l.reservations(later).len(), 1);
        // Set back, it lapses; a lapsed or unknown lease cannot be held.
        l.set_expiry(r.lease, t0 + Duration::from_secs(10), later);
        assert!(l.reservations(later).is_empty());
        assert_eq!(l.set_expiry(r.lease, held_until, later), None);
        assert_eq!(l.set_expiry(999, held_until, t0), None);
    }

    #[test]
    fn grants_what_fits_and_says_which_resource_does_not() {
        let mut l = ledger();
        let now = Instant::now();
        let lease = Duration::from_secs(30);
        assert!(l
            .reserve("a", offer(1, "vm1", 3.0, 1000.0), lease, now)
            .is_ok());
        let err = l
            .reserve("b", offer(2, "vm2", 2.0, 1000.0), lease, now)
            .unwrap_err();
        assert!(
            matches!(
                err,
                LedgerError::NoRoom {
                    resource: "cpu",
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains("cpu at 300 s would reach 90%"),
            "{err}"
        );
    }

    #[test]
    fn an_expired_lease_frees_its_room_and_cannot_be_committed() {
        let mut l = ledger();
        let now = Instant::now();
        let r = l
            .reserve(
                "a",
                offer(1, "vm1", 3.5, 100.0),
                Duration::from_secs(10),
                now,
            )
            .unwrap();
        let later = now + Duration::from_secs(11);
        assert_eq!(
            l.commit(r.lease, "a", later),
            Err(LedgerError::UnknownLease(r.lease))
        );
        assert!(l
            .reserve(
                "b",
                offer(2, "vm2", 3.5, 100.0),
                Duration::from_secs(10),
                later
            )
            .is_ok());
        assert_eq!(l.reservations(later).len(), 1);
    }

    #[test]
    fn commit_keeps_the_vm_counted_until_the_hosts_forecast_holds_it() {
        let mut l = ledger();
        let now = Instant::now();
        let r = l
            .reserve(
                "a",
                offer(1, "vm1", 3.5, 100.0),
                Duration::from_secs(10),
                now,
            )
            .unwrap();
        assert_eq!(
            l.commit(r.lease, "b", now),
            Err(LedgerError::NotYours {
                lease: r.lease,
                owner: "a".into(),
                asker: "b".into()
            })
        );
        l.commit(r.lease, "a", now).unwrap();
        assert!(l.reservations(now).is_empty());
        // Still counted: nothing more fits.
        assert!(l.headroom_with(&offer(2, "vm2", 1.0, 10.0), now).is_err());
        // The host's own forecast now includes vm1.
        l.set_own(offer(0, "own", 7.5, 2100.0).forecast, &["vm1".into()]);
        assert!(l.headroom_with(&offer(2, "vm2", 0.4, 10.0), now).is_ok());
    }

    #[test]
    fn release_is_idempotent_and_draining_refuses_everything() {
        let mut l = ledger();
        let now = Instant::now();
        let r = l
            .reserve(
                "a",
                offer(1, "vm1", 1.0, 100.0),
                Duration::from_secs(10),
                now,
            )
            .unwrap();
        l.release(r.lease, "a", now).unwrap();
        l.release(r.lease, "a", now).unwrap();
        l.set_draining(true);
        assert_eq!(
            l.reserve("a", offer(2, "vm2", 0.1, 1.0), Duration::from_secs(1), now),
            Err(LedgerError::Draining)
        );
    }

    #[test]
    fn hostile_offers_are_refused() {
        let l = ledger();
        let now = Instant::now();
        let mut bad = offer(1, "vm", 1.0, 1.0);
        bad.forecast[0].upper.cpu = f64::NAN;
        assert!(matches!(
            l.headroom_with(&bad, now),
            Err(LedgerError::BadOffer(_))
        ));
        let mut negative = offer(1, "vm", -5.0, 1.0);
        negative.forecast[0].upper.cpu = -5.0;
        assert!(matches!(
            l.headroom_with(&negative, now),
            Err(LedgerError::BadOffer(_))
        ));
        let mut many = offer(1, "vm", 1.0, 1.0);
        many.forecast = vec![many.forecast[0]; 100];
        assert!(matches!(
            l.headroom_with(&many, now),
            Err(LedgerError::BadOffer(_))
        ));
    }

    #[test]
    fn concurrent_sources_never_double_book() {
        use std::sync::{Arc, Mutex};
        let l = Arc::new(Mutex::new(ledger()));
        let now = Instant::now();
        let granted: Vec<bool> = (0..8)
            .map(|i| {
                let l = l.clone();
                std::thread::spawn(move || {
                    l.lock()
                        .unwrap()
                        .reserve(
                            &format!("src{i}"),
                            offer(i, &format!("vm{i}"), 2.5, 10.0),
                            Duration::from_secs(30),
                            now,
                        )
                        .is_ok()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        // 4 own + 2.5 fits once under 8 (80% of 10); a second would reach 9.
        assert_eq!(granted.iter().filter(|g| **g).count(), 1);
    }
}
