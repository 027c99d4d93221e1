//! The durability contract, checked at connect: each backend reads the
//! broker (or database) settings that would break what an acknowledged
//! publish (or a committed append) promises, and reports each as a
//! [`DurabilityRisk`]; [`Durability`] says what then happens
//! ([`driver::enforce_durability`](crate::driver::enforce_durability)).

use serde::{Deserialize, Serialize};

/// What a bus or store does at connect when the broker's settings break
/// its durability contract (the guide's "Durability" table says, per
/// backend, what is checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Refuse to connect ([`Error::Durability`](crate::Error::Durability),
    /// naming each setting), also
    /// when a setting cannot be read (a managed Redis that renamed
    /// `CONFIG`, say): an unverified contract is not kept.
    Require,
    /// Connect, logging one warning per setting (and counting it in the
    /// `eventsource.durability_risks` metric).
    #[default]
    Warn,
    /// Do not check.
    Off,
}

/// One setting that breaks the contract: its name, the value found and
/// what it costs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurabilityRisk {
    /// The setting, as the broker names it (`appendonly`,
    /// `synchronous_commit`, …).
    pub setting: String,
    /// The value found (or why it could not be read).
    pub value: String,
    /// What an acknowledged publish (or commit) may lose because of it.
    pub consequence: String,
}

impl DurabilityRisk {
    /// A risk from its three parts.
    pub fn new(
        setting: impl Into<String>,
        value: impl Into<String>,
        consequence: impl Into<String>,
    ) -> Self {
        DurabilityRisk {
            setting: setting.into(),
            value: value.into(),
            consequence: consequence.into(),
        }
    }
}

impl std::fmt::Display for DurabilityRisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} = {}: {}", self.setting, self.value, self.consequence)
    }
}
