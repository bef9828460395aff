//! The directory of live actors: workspace id → the address of its one actor, the mailbox
//! slots its callers hold, and the provider its probes ask; and the names in use (a name
//! belongs to one live workspace, claimed at create and released once it is gone).
//!
//! Guarantees: lookups are a sharded concurrent map read, never a global lock, so the
//! directory is not a throughput bottleneck; no shard stays locked across an await (callers
//! get clones). It decides nothing: the registry fills it, the probes read it.

use actix::Addr;
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use steward_domain::WorkspaceId;

use crate::WorkspaceActor;

/// One live actor.
#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) addr: Addr<WorkspaceActor>,
    /// Messages sent to it and not answered yet (bounded by `mailbox_capacity`).
    pub(crate) mailbox: Arc<AtomicUsize>,
    /// The provider the workspace runs on (what its prober asks).
    pub(crate) provider: Arc<str>,
    /// The workspace's name (released with the entry).
    pub(crate) name: Arc<str>,
}

/// Every live actor, by workspace.
pub(crate) struct Directory {
    entries: DashMap<WorkspaceId, Entry>,
    /// Which workspace holds each name.
    names: DashMap<Arc<str>, WorkspaceId>,
    /// The configured providers' names, shared by every entry that names one (a hundred
    /// thousand entries hold a pointer each, not a copy).
    provider_names: HashMap<String, Arc<str>>,
}

impl Directory {
    pub(crate) fn new<'a>(providers: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            entries: DashMap::new(),
            names: DashMap::new(),
            provider_names: providers
                .into_iter()
                .map(|name| (name.to_owned(), Arc::from(name)))
                .collect(),
        }
    }

    /// `name`, shared if it is a configured provider's.
    pub(crate) fn provider_name(&self, name: &str) -> Arc<str> {
        self.provider_names
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.into())
    }

    pub(crate) fn insert(&self, id: WorkspaceId, entry: Entry) {
        self.entries.insert(id, entry);
    }

    pub(crate) fn get(&self, id: WorkspaceId) -> Option<Entry> {
        self.entries.get(&id).map(|e| e.clone())
    }

    pub(crate) fn contains(&self, id: WorkspaceId) -> bool {
        self.entries.contains_key(&id)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn ids(&self) -> Vec<WorkspaceId> {
        self.entries.iter().map(|e| *e.key()).collect()
    }

    pub(crate) fn entries(&self) -> Vec<Entry> {
        self.entries.iter().map(|e| e.value().clone()).collect()
    }

    /// The actors of workspaces on `provider`.
    pub(crate) fn on_provider(&self, provider: &str) -> Vec<(WorkspaceId, Addr<WorkspaceActor>)> {
        self.entries
            .iter()
            .filter(|entry| *entry.provider == *provider)
            .map(|entry| (*entry.key(), entry.addr.clone()))
            .collect()
    }

    /// The workspace is now on `provider`.
    pub(crate) fn set_provider(&self, id: WorkspaceId, provider: &str) {
        if let Some(mut entry) = self.entries.get_mut(&id) {
            entry.provider = self.provider_name(provider);
        }
    }

    /// Drops the entry of `id` if `addr` is still its actor, and releases its name.
    pub(crate) fn forget(&self, id: WorkspaceId, addr: &Addr<WorkspaceActor>) {
        if let Some((_, entry)) = self.entries.remove_if(&id, |_, e| e.addr == *addr) {
            self.release_name(&entry.name, id);
        }
    }

    /// Drops the entry of `id` and releases its name.
    pub(crate) fn remove(&self, id: WorkspaceId) {
        if let Some((_, entry)) = self.entries.remove(&id) {
            self.release_name(&entry.name, id);
        }
    }

    /// Claims `name` for `id`: `Err` with the workspace that holds it, if another does.
    pub(crate) fn claim_name(&self, name: &str, id: WorkspaceId) -> Result<(), WorkspaceId> {
        match self.names.entry(Arc::from(name)) {
            dashmap::Entry::Occupied(held) if *held.get() != id => Err(*held.get()),
            dashmap::Entry::Occupied(_) => Ok(()),
            dashmap::Entry::Vacant(free) => {
                free.insert(id);
                Ok(())
            }
        }
    }

    /// Releases `name` if `id` holds it.
    pub(crate) fn release_name(&self, name: &str, id: WorkspaceId) {
        self.names.remove_if(name, |_, holder| *holder == id);
    }
}
