//! Why a restart was asked for, and small sets of causes.

use std::fmt;

/// The reason a cycle is requested.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cause {
    /// The first provision of a newly created workspace.
    Create,
    /// A user asked (HTTP/CLI `restart` or `start`).
    Manual,
    /// The workspace's configuration changed (secret, model).
    Config,
    /// Probes observed the instance dead.
    Health,
    /// Start-up reconcile or an actor restart found the instance missing or out of date.
    Recovery,
    /// A provider switch.
    Switch,
}

impl Cause {
    /// Every cause, in a stable order.
    pub const ALL: [Cause; 6] = [
        Cause::Create,
        Cause::Manual,
        Cause::Config,
        Cause::Health,
        Cause::Recovery,
        Cause::Switch,
    ];

    /// The snake_case name used at the edges (API, events, metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Create => "create",
            Cause::Manual => "manual",
            Cause::Config => "config",
            Cause::Health => "health",
            Cause::Recovery => "recovery",
            Cause::Switch => "switch",
        }
    }

    /// Parses the name produced by [`Cause::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Whether this cause is a user's intent, which must never be dropped.
    pub fn is_intent(self) -> bool {
        matches!(
            self,
            Cause::Create | Cause::Manual | Cause::Config | Cause::Switch
        )
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of causes (a bit set: one byte).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CauseSet(u8);

impl CauseSet {
    /// The empty set.
    pub const EMPTY: CauseSet = CauseSet(0);

    /// The set holding just `cause`.
    pub fn of(cause: Cause) -> Self {
        Self(cause.bit())
    }

    /// Adds `cause`.
    pub fn insert(&mut self, cause: Cause) {
        self.0 |= cause.bit();
    }

    /// Removes `cause`.
    pub fn remove(&mut self, cause: Cause) {
        self.0 &= !cause.bit();
    }

    /// Union of two sets.
    pub fn union(self, other: CauseSet) -> Self {
        Self(self.0 | other.0)
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether `cause` is in the set.
    pub fn contains(self, cause: Cause) -> bool {
        self.0 & cause.bit() != 0
    }

    /// Whether any cause in the set is a user intent.
    pub fn has_intent(self) -> bool {
        self.iter().any(Cause::is_intent)
    }

    /// The causes, in [`Cause::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Cause> {
        Cause::ALL.into_iter().filter(move |c| self.contains(*c))
    }

    /// Empties the set and returns what it held.
    pub fn take(&mut self) -> CauseSet {
        std::mem::take(self)
    }
}

impl FromIterator<Cause> for CauseSet {
    fn from_iter<I: IntoIterator<Item = Cause>>(iter: I) -> Self {
        let mut set = CauseSet::EMPTY;
        for c in iter {
            set.insert(c);
        }
        set
    }
}
