//! Parsers for the guest's /proc files. Each takes the file's text, so it is tested without a
//! guest; [`read`] turns a missing or unreadable file into `None` ("unavailable").

pub mod cpu;
pub mod disk;
pub mod flows;
pub mod memory;
pub mod net;

use std::path::Path;

/// The text of a /proc file, or `None` if this kernel does not have it or will not read it
/// (a PSI file with PSI disabled fails on read, not on open).
pub fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// `key value...` lines: the first number after `key` (a trailing `:` on the key is ignored).
pub(crate) fn field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        let name = words.next()?.trim_end_matches(':');
        (name == key).then(|| words.next()?.parse().ok())?
    })
}
