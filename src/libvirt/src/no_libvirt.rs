//! The connection of a build without libvirt: it cannot be opened, so none of its methods can
//! be reached; they exist so callers build the same either way.

use crate::domain_xml::DomainXml;
use crate::migration::{MigrationReport, MigrationRequest};
use crate::stats::DomainStats;
use crate::Error;
use std::convert::Infallible;

#[derive(Debug)]
pub struct Connection {
    never: Infallible,
}

impl Connection {
    pub fn open(_uri: &str) -> Result<Self, Error> {
        Err(Error::NotBuilt)
    }

    pub fn uri(&self) -> &str {
        match self.never {}
    }

    pub fn running_domains(&self) -> Result<Vec<DomainXml>, Error> {
        match self.never {}
    }

    pub fn all_stats(&self) -> Result<Vec<DomainStats>, Error> {
        match self.never {}
    }

    pub fn start_dirty_rate(&self, _name: &str, _seconds: i32) -> Result<(), Error> {
        match self.never {}
    }

    pub fn migratable_xml(&self, _name: &str) -> Result<String, Error> {
        match self.never {}
    }

    pub fn migrate(&self, _name: &str, _request: &MigrationRequest) -> MigrationReport {
        match self.never {}
    }
}
