//! Which traced VMs are kept out of design decisions.
//!
//! A VM is *held out* when the FNV-1a 64-bit hash of its id is divisible by 5 (about a fifth of
//! the VMs). Features, model settings and thresholds are chosen on the *design* part only; the
//! held-out part is evaluated and reported separately, so its figures say how the forecaster
//! does on VMs nothing was tuned on. The rule depends on the id alone, so anyone can recompute
//! which VMs fall where.

use serde::Serialize;

/// Which part of a trace an evaluation runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    Design,
    HeldOut,
    All,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Design => "design",
            Split::HeldOut => "held-out",
            Split::All => "all",
        }
    }

    /// Whether the VM `id` belongs to this part.
    pub fn contains(self, id: &str) -> bool {
        match self {
            Split::Design => !is_held_out(id),
            Split::HeldOut => is_held_out(id),
            Split::All => true,
        }
    }
}

impl std::str::FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "design" => Ok(Split::Design),
            "held-out" => Ok(Split::HeldOut),
            "all" => Ok(Split::All),
            other => Err(format!("unknown split {other:?} (design, held-out or all)")),
        }
    }
}

/// FNV-1a, 64 bits: small, fixed, and the same everywhere.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

pub fn is_held_out(id: &str) -> bool {
    fnv1a(id).is_multiple_of(5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn design_and_held_out_partition_the_vms() {
        let ids: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
        let held = ids.iter().filter(|id| Split::HeldOut.contains(id)).count();
        let design = ids.iter().filter(|id| Split::Design.contains(id)).count();
        assert_eq!(held + design, ids.len());
        assert!((150..250).contains(&held), "{held} of 1000 held out");
    }
}
