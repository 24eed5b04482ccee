//! The host's virtual switch between its microVMs: a packet to a VM id on this host counts as
//! received by that VM; anything else leaves the host (and is only counted by the sender).

use augur_microvm::{NetSwitch, VmCounters};
use augur_wire::VmId;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

#[derive(Debug, Default)]
pub struct HostSwitch {
    ports: RwLock<HashMap<VmId, Arc<VmCounters>>>,
}

impl HostSwitch {
    pub fn attach(&self, vm: VmId, counters: Arc<VmCounters>) {
        self.ports
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(vm, counters);
    }

    pub fn detach(&self, vm: VmId) {
        self.ports
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&vm);
    }
}

impl NetSwitch for HostSwitch {
    fn deliver(&self, from: VmId, dest: u32, _port: u16, bytes: u64) {
        let dest = VmId::from(dest);
        if dest == from {
            return;
        }
        if let Some(counters) = self
            .ports
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&dest)
        {
            counters.net_rx_bytes.fetch_add(bytes, Ordering::Relaxed);
            counters.net_rx_packets.fetch_add(1, Ordering::Relaxed);
        }
    }
}
