//! The registry: the supervisor of every workspace actor, and the one way in for callers.
//!
//! It boots the actors from the store, routes each request to its workspace's actor (through
//! the [`Directory`]), starts the probes, and drains what actors tell it ([`SupervisorNote`]:
//! a provider changed, a workspace purged, an actor crashed) — actors never call into it.
//!
//! Guarantees:
//! - exactly one live actor per workspace: actors are spawned only when a workspace is
//!   created (fresh random id), loaded at boot, or respawned after its predecessor stopped;
//! - mailboxes are bounded: a message beyond `mailbox_capacity` waiting for one actor is
//!   refused with [`ActorError::Overloaded`] instead of queueing without bound;
//! - actors are spread over several arbiters (threads) by id, so actor processing is not
//!   limited to one core.

use actix::prelude::*;
use dashmap::DashMap;
use futures::future::join_all;
use secrecy::SecretString;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use steward_domain::{
    Generation, Goal, MachineState, Phase, Progress, ReadyWhen, Settled, WorkspaceId,
};
use steward_provider::{LogQuery, LogStream, Provider, ProviderError};
use steward_store::{AgentRecord, EventRecord, StoreError, WorkspaceRecord};
use tokio::sync::{broadcast, mpsc, watch, OnceCell};

use crate::directory::{Directory, Entry};
use crate::messages::{
    FromAgent, Get, Inspect, Kill, LateCompletion, Shutdown, Submit, Subscribe, Waited,
};
use crate::probes::{follow_deaths, remove_orphan, Prober};
use crate::supervisor::{Supervisor, SupervisorNote};
use crate::workspace::{live_generation, Commit, Origin};
use crate::{
    ActorError, ActorView, AgentCall, Deps, Intent, IntentReply, NewWorkspace, WorkspaceActor,
    WorkspaceView,
};

/// How the registry runs its actors.
#[derive(Clone, Debug)]
pub struct RegistryOptions {
    /// Arbiters (threads) to spread actors over; `0` runs them on the current arbiter
    /// (tests with paused time).
    pub arbiters: usize,
}

/// How long a request waits for a crashed actor's successor before answering 503.
const RESPAWN_WAIT: Duration = Duration::from_secs(5);
/// How often it looks for the successor meanwhile.
const RESPAWN_POLL: Duration = Duration::from_millis(10);

/// The outcome of an idempotent create, shared by concurrent requests with the same key.
type IdempotentCreate = Result<(WorkspaceId, String, Option<WorkspaceView>), ActorError>;

struct Inner {
    deps: Arc<Deps>,
    actors: Arc<Directory>,
    /// Given to every actor: its way to tell the registry what only the registry can do.
    supervisor: Supervisor,
    arbiters: Vec<ArbiterHandle>,
    /// Creates in progress per idempotency key (removed once settled: the store has it).
    creating: DashMap<String, Arc<OnceCell<IdempotentCreate>>>,
    shutting_down: AtomicBool,
    /// Flips to `true` when shutdown begins, so long-lived streams can end.
    closing: watch::Sender<bool>,
    /// Counts the workspaces purged (deleted and gone), for deletes that wait for theirs.
    purged: watch::Sender<u64>,
}

/// Handle to the registry. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

/// Releases one mailbox slot when a request settles or is dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Registry {
    /// Loads every workspace from the store, asks each provider once for its instances,
    /// removes orphans (instances with no workspace), and starts one actor per workspace,
    /// which reconciles with what its provider has.
    pub async fn boot(deps: Deps, options: RegistryOptions) -> Result<Registry, ActorError> {
        let arbiters = (0..options.arbiters)
            .map(|_| Arbiter::new().handle())
            .collect();
        let actors = Arc::new(Directory::new(deps.providers.names()));
        let (supervisor, notes) = Supervisor::channel();
        let registry = Registry {
            inner: Arc::new(Inner {
                deps: Arc::new(deps),
                actors,
                supervisor,
                arbiters,
                creating: DashMap::new(),
                shutting_down: AtomicBool::new(false),
                closing: watch::channel(false).0,
                purged: watch::channel(0).0,
            }),
        };
        actix::spawn(supervise(Arc::downgrade(&registry.inner), notes));
        let records = registry
            .inner
            .deps
            .store
            .load_all()
            .await
            .map_err(|e| ActorError::Store(e.to_string()))?;
        let live = registry.survey(&records).await;
        let count = records.len();
        for record in records {
            if let Err(holder) = registry
                .inner
                .actors
                .claim_name(&record.spec.name, record.id)
            {
                // Stored before names were unique: both keep working by id.
                tracing::warn!(workspace = %record.id, name = %record.spec.name, %holder, "two workspaces share a name; it stays with the first");
            }
            let live = live.get(&record.id).copied().flatten();
            registry.spawn(record, Origin::Restored { live }, 0);
        }
        tracing::info!(workspaces = count, "registry booted");
        Ok(registry)
    }

    /// One `list` per provider: the live generation of each workspace's instance. Removes
    /// instances that belong to no workspace.
    async fn survey(
        &self,
        records: &[WorkspaceRecord],
    ) -> HashMap<WorkspaceId, Option<Generation>> {
        let provider_of: HashMap<WorkspaceId, &str> = records
            .iter()
            .map(|r| (r.id, r.spec.provider.as_str()))
            .collect();
        let mut live = HashMap::new();
        for provider in self.inner.deps.providers.iter() {
            let instances = match provider.list().await {
                Ok(instances) => instances,
                Err(e) => {
                    // Unknown is not absent: assume what was persisted and let the probes
                    // verify, rather than replace every instance of a briefly unreachable
                    // engine.
                    tracing::warn!(provider = provider.name(), error = %e, "cannot list instances at boot; assuming they are as recorded");
                    for record in records
                        .iter()
                        .filter(|r| r.spec.provider == provider.name())
                    {
                        live.insert(record.id, assumed_live(&record.state));
                    }
                    continue;
                }
            };
            for instance in instances {
                match provider_of.get(&instance.workspace_id) {
                    Some(name) if *name == provider.name() => {
                        live.insert(instance.workspace_id, live_generation(instance.liveness));
                    }
                    _ => remove_orphan(provider.clone(), instance.workspace_id),
                }
            }
        }
        live
    }

    fn spawn(&self, record: WorkspaceRecord, origin: Origin, restarts: u32) -> Entry {
        let id = record.id;
        let provider = self.inner.actors.provider_name(&record.spec.provider);
        let name = Arc::from(record.spec.name.as_str());
        let mailbox = Arc::new(AtomicUsize::new(0));
        let actor = WorkspaceActor::new(
            record,
            origin,
            self.inner.deps.clone(),
            self.inner.supervisor.clone(),
            mailbox.clone(),
            restarts,
        );
        let addr = match self.arbiter_for(id) {
            Some(arbiter) => WorkspaceActor::start_in_arbiter(arbiter, move |_| actor),
            None => actor.start(),
        };
        let entry = Entry {
            addr,
            mailbox,
            provider,
            name,
        };
        self.inner.actors.insert(id, entry.clone());
        entry
    }

    fn arbiter_for(&self, id: WorkspaceId) -> Option<&ArbiterHandle> {
        if self.inner.arbiters.is_empty() {
            return None;
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut hasher);
        let n = self.inner.arbiters.len() as u64;
        self.inner
            .arbiters
            .get(usize::try_from(hasher.finish() % n).unwrap_or(0))
    }

    async fn ask_entry<M>(&self, entry: &Entry, msg: M) -> Result<M::Result, ActorError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        WorkspaceActor: Handler<M>,
    {
        Ok(self.ask_entry_held(entry, msg).await?.0)
    }

    /// Like [`Registry::ask_entry`], and returns the mailbox slot the message took, for the
    /// caller to hold while it still waits on the answer (an intent's commit): until then
    /// the intent counts against the workspace's mailbox capacity.
    async fn ask_entry_held<M>(
        &self,
        entry: &Entry,
        msg: M,
    ) -> Result<(M::Result, Slot), ActorError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        WorkspaceActor: Handler<M>,
    {
        if entry.mailbox.fetch_add(1, Ordering::AcqRel) >= self.inner.deps.mailbox_capacity {
            entry.mailbox.fetch_sub(1, Ordering::AcqRel);
            return Err(ActorError::Overloaded);
        }
        let slot = Slot(entry.mailbox.clone());
        let answer = entry
            .addr
            .send(msg)
            .await
            .map_err(|_| ActorError::Restarting)?;
        Ok((answer, slot))
    }

    /// Sends `msg` to the workspace's actor. If that actor stopped (it crashed and is being
    /// restarted from the store), the message was never handled, so it is sent again to the
    /// successor: an actor restart is invisible to callers unless it takes longer than
    /// [`RESPAWN_WAIT`].
    async fn ask<M>(&self, id: WorkspaceId, msg: M) -> Result<M::Result, ActorError>
    where
        M: Message + Clone + Send + 'static,
        M::Result: Send,
        WorkspaceActor: Handler<M>,
    {
        Ok(self.ask_held(id, msg).await?.0)
    }

    /// [`Registry::ask`], holding the mailbox slot (see [`Registry::ask_entry_held`]).
    async fn ask_held<M>(&self, id: WorkspaceId, msg: M) -> Result<(M::Result, Slot), ActorError>
    where
        M: Message + Clone + Send + 'static,
        M::Result: Send,
        WorkspaceActor: Handler<M>,
    {
        let deadline = tokio::time::Instant::now() + RESPAWN_WAIT;
        loop {
            let entry = self.inner.actors.get(id).ok_or(ActorError::NotFound(id))?;
            if entry.addr.connected() {
                match self.ask_entry_held(&entry, msg.clone()).await {
                    Err(ActorError::Restarting) => {}
                    answer => return answer,
                }
            }
            if tokio::time::Instant::now() >= deadline
                || self.inner.shutting_down.load(Ordering::Acquire)
            {
                return Err(ActorError::Restarting);
            }
            tokio::time::sleep(RESPAWN_POLL).await;
        }
    }

    /// The digest an idempotent create's `body` is compared by (see
    /// [`steward_store::Store::request_digest`]).
    pub fn request_digest(&self, body: &[u8]) -> String {
        self.inner.deps.store.request_digest(body)
    }

    /// Creates a workspace; answers once the creation is committed. With an idempotency
    /// key, the same key and body give the same workspace, created once: exactly one request
    /// gets `true` (created), every other one `false` (a replay).
    ///
    /// Requests with one key are one flight in this daemon: the first looks the key up and
    /// creates, the others wait for it and answer the same view. Across daemons sharing a
    /// database, the key's uniqueness decides: a create whose insert loses to another
    /// daemon's finds the key stored and answers as a replay of that workspace.
    pub async fn create(&self, new: NewWorkspace) -> Result<(WorkspaceView, bool), ActorError> {
        if self.inner.shutting_down.load(Ordering::Acquire) {
            return Err(ActorError::ShuttingDown);
        }
        let provider = self.provider(&new.spec.provider)?;
        provider
            .admits(&new.spec)
            .map_err(ActorError::NotAdmitted)?;
        let Some((key, hash)) = new.idempotency.clone() else {
            return Ok((self.create_now(new, provider.as_ref()).await?, true));
        };
        let cell = self.inner.creating.entry(key.clone()).or_default().clone();
        let mut flew = false;
        let settled = cell
            .get_or_init(|| {
                flew = true;
                self.create_once(new, provider.as_ref(), &key, &hash)
            })
            .await
            .clone();
        self.inner
            .creating
            .remove_if(&key, |_, c| Arc::ptr_eq(c, &cell));
        let (id, stored_hash, created) = settled?;
        // An empty digest: stored before digests were keyed, its body unknown; a replay.
        if !stored_hash.is_empty() && stored_hash != hash {
            return Err(ActorError::IdempotencyConflict);
        }
        match created {
            // The request that created answers 201; those that waited for it, the same view.
            Some(view) => Ok((view, flew)),
            None => Ok((self.replayed(id).await?, false)),
        }
    }

    /// The first request of a key's flight: the workspace the key names if it is stored,
    /// else a new one (`Some(view)`).
    async fn create_once(
        &self,
        new: NewWorkspace,
        provider: &dyn Provider,
        key: &str,
        hash: &str,
    ) -> IdempotentCreate {
        let store = &self.inner.deps.store;
        let stored = |e: StoreError| ActorError::Store(e.to_string());
        if let Some((id, stored_hash)) = store.idempotency(key).await.map_err(stored)? {
            return Ok((id, stored_hash, None));
        }
        match self.create_now(new, provider).await {
            Ok(view) => Ok((view.id, hash.to_owned(), Some(view))),
            // Another daemon's create with this key committed first (the key is unique):
            // ours wrote nothing, and this is a replay of theirs.
            Err(ActorError::Store(reason)) => match store.idempotency(key).await {
                Ok(Some((id, stored_hash))) => {
                    tracing::debug!(key, workspace = %id, "idempotent create lost to a concurrent one; replaying it");
                    Ok((id, stored_hash, None))
                }
                _ => Err(ActorError::Store(reason)),
            },
            Err(e) => Err(e),
        }
    }

    /// The workspace a replayed create answers: live from its actor, or from the store when
    /// another daemon created it.
    async fn replayed(&self, id: WorkspaceId) -> Result<WorkspaceView, ActorError> {
        match self.get(id).await {
            Err(ActorError::NotFound(_)) => self
                .inner
                .deps
                .store
                .load(id)
                .await
                .map_err(|e| ActorError::Store(e.to_string()))?
                .map(|record| WorkspaceView::from(&record))
                .ok_or(ActorError::NotFound(id)),
            answer => answer,
        }
    }

    async fn create_now(
        &self,
        new: NewWorkspace,
        provider: &dyn Provider,
    ) -> Result<WorkspaceView, ActorError> {
        let now = self.inner.deps.clock.now();
        let ready_when = ReadyWhen::at_create(
            new.ready_when,
            new.spec.command.is_some(),
            provider.default_ready_when(),
        );
        let id = WorkspaceId::from(uuid::Uuid::new_v4());
        let name = new.spec.name.clone();
        self.inner
            .actors
            .claim_name(&name, id)
            .map_err(|holder| ActorError::NameTaken {
                name: name.clone(),
                holder,
            })?;
        let record = WorkspaceRecord {
            id,
            spec: new.spec,
            state: MachineState::new(ready_when),
            secrets: new.secrets,
            agent: AgentRecord::default(),
            last_event_seq: 0,
            created_at: now,
            updated_at: now,
        };
        let entry = self.spawn(record, Origin::New, 0);
        let created = async {
            let (decided, slot) = self
                .ask_entry_held(
                    &entry,
                    Submit(Intent::Create {
                        idempotency: new.idempotency,
                    }),
                )
                .await?;
            durable(decided).await.map(|_| slot)
        };
        // Nothing was created: the name is free again (the actor finds no record and goes).
        let slot = created
            .await
            .inspect_err(|_| self.inner.actors.release_name(&name, id))?;
        // The create's slot is free again before its view is asked for.
        drop(slot);
        self.ask_entry(&entry, Get).await
    }

    /// Sends an intent to a workspace; answers once it is committed.
    pub async fn submit(&self, id: WorkspaceId, intent: Intent) -> Result<IntentReply, ActorError> {
        let (decided, _slot) = self.ask_held(id, Submit(intent)).await?;
        durable(decided).await
    }

    /// Waits, at most `timeout`, for `goal` (an intent's, from its [`IntentReply`]) to
    /// settle on workspace `id`, then answers how it settled and the workspace as it is then.
    ///
    /// Waiters are woken by the workspace's own transitions: they watch the progress cell its
    /// actor updates after each event, and nothing polls. When the actor stops, the cell
    /// closes: a workspace that is no longer in the directory is gone; one whose actor
    /// crashed is watched again once its successor runs (the wait for that successor is the
    /// one every request makes, see [`Registry::ask`]). If the daemon begins to shut down,
    /// the wait ends unsettled.
    pub async fn wait(
        &self,
        id: WorkspaceId,
        goal: Goal,
        timeout: Duration,
    ) -> Result<Waited, ActorError> {
        let mut closing = self.closing();
        let settled = tokio::select! {
            settled = tokio::time::timeout(timeout, self.settle(id, goal, None)) => {
                settled.ok().and_then(Result::ok)
            }
            _ = closing.wait_for(|closing| *closing) => None,
        };
        self.waited(id, settled).await
    }

    /// Waits, at most `timeout`, for workspace `id` to reach `phase` (`running`: its latest
    /// generation, or a later one, running — or a cycle of it failed, or it is meant to stay
    /// stopped; `stopped`; `deleted`: gone) — [`Goal::reach`]. Other phases are refused.
    pub async fn wait_for(
        &self,
        id: WorkspaceId,
        phase: Phase,
        timeout: Duration,
    ) -> Result<Waited, ActorError> {
        let progress = self.ask(id, Subscribe).await?;
        let now = *progress.borrow();
        let goal = Goal::reach(phase, &now).ok_or(ActorError::NotWaitable(phase.as_str()))?;
        let mut closing = self.closing();
        let settled = tokio::select! {
            settled = tokio::time::timeout(timeout, self.settle(id, goal, Some(progress))) => {
                settled.ok().and_then(Result::ok)
            }
            _ = closing.wait_for(|closing| *closing) => None,
        };
        self.waited(id, settled).await
    }

    /// Watches the workspace's progress until `goal` settles (see [`Registry::wait`]).
    async fn settle(
        &self,
        id: WorkspaceId,
        goal: Goal,
        mut watching: Option<watch::Receiver<Progress>>,
    ) -> Result<Settled, ActorError> {
        loop {
            let mut progress = match watching.take() {
                Some(progress) => progress,
                None => match self.ask(id, Subscribe).await {
                    Ok(progress) => progress,
                    Err(ActorError::NotFound(_)) => return Ok(Settled::Gone),
                    Err(e) => return Err(e),
                },
            };
            loop {
                if let Some(settled) = goal.settled(&progress.borrow_and_update()) {
                    return Ok(settled);
                }
                if progress.changed().await.is_err() {
                    // The actor stopped: the workspace is gone, or its actor restarts.
                    break;
                }
            }
        }
    }

    /// The answer to a wait: how it settled, and the workspace now.
    async fn waited(
        &self,
        id: WorkspaceId,
        settled: Option<Settled>,
    ) -> Result<Waited, ActorError> {
        if settled == Some(Settled::Gone) {
            return Ok(Waited {
                settled,
                workspace: None,
            });
        }
        match self.get(id).await {
            Ok(view) => Ok(Waited {
                settled,
                workspace: Some(view),
            }),
            // Gone between the two: that settles any goal.
            Err(ActorError::NotFound(_)) => Ok(Waited {
                settled: Some(Settled::Gone),
                workspace: None,
            }),
            Err(e) => Err(e),
        }
    }

    /// An agent's call, routed by the workspace its token names and verified by that
    /// workspace's actor. Any mismatch (unknown workspace, other generation, wrong secret) is
    /// the same `Unauthorized`, so a token reveals nothing.
    pub async fn from_agent(
        &self,
        token: SecretString,
        call: AgentCall,
    ) -> Result<Generation, ActorError> {
        let (id, _) = crate::agent::token_claims(secrecy::ExposeSecret::expose_secret(&token))
            .ok_or(ActorError::Unauthorized)?;
        match self.ask(id, FromAgent { token, call }).await {
            Err(ActorError::NotFound(_)) => Err(ActorError::Unauthorized),
            other => other?,
        }
    }

    /// Deletes a workspace: answers once the delete is committed, with whether the workspace
    /// was also gone (its instance removed, its records deleted) within `wait`. If not, the
    /// deletion goes on.
    pub async fn delete(
        &self,
        id: WorkspaceId,
        wait: Duration,
    ) -> Result<(IntentReply, bool), ActorError> {
        let mut purged = self.inner.purged.subscribe();
        let mut closing = self.closing();
        let reply = self.submit(id, Intent::Delete).await?;
        let gone = async {
            while self.inner.actors.contains(id) {
                tokio::select! {
                    changed = purged.changed() => changed.ok()?,
                    _ = closing.changed() => return None,
                }
            }
            Some(())
        };
        let gone = tokio::time::timeout(wait, gone)
            .await
            .ok()
            .flatten()
            .is_some();
        Ok((reply, gone))
    }

    /// Claims a provider switch for a workspace; answers once the claim is committed (the
    /// switch itself goes on in the actor, whatever happens to the caller).
    pub async fn switch_provider(
        &self,
        id: WorkspaceId,
        to: String,
    ) -> Result<IntentReply, ActorError> {
        let provider = self.provider(&to)?;
        // What a switch could never run on is refused before it is claimed: the old instance
        // stays, and no event is recorded. (Image and command never change after a create.)
        provider
            .admits(&self.get(id).await?.spec)
            .map_err(ActorError::NotAdmitted)?;
        let to_ready = provider.default_ready_when();
        self.submit(id, Intent::SwitchProvider { to, to_ready })
            .await
    }

    /// The enabled provider called `name`.
    fn provider(&self, name: &str) -> Result<Arc<dyn Provider>, ActorError> {
        let providers = &self.inner.deps.providers;
        match providers.get(name) {
            Some(provider) => Ok(provider.clone()),
            None if providers.is_disabled(name) => {
                Err(ActorError::ProviderDisabled(name.to_owned()))
            }
            None => Err(ActorError::UnknownProvider(name.to_owned())),
        }
    }

    /// Hands an actor a late operation completion (tests of stale results only).
    #[doc(hidden)]
    pub async fn late_completion(
        &self,
        id: WorkspaceId,
        completion: LateCompletion,
    ) -> Result<(), ActorError> {
        self.ask(id, completion).await
    }

    /// Kills a workspace's instance through its provider (fault drill).
    pub async fn kill(&self, id: WorkspaceId) -> Result<(), ActorError> {
        self.ask(id, Kill).await?
    }

    /// One workspace.
    pub async fn get(&self, id: WorkspaceId) -> Result<WorkspaceView, ActorError> {
        self.ask(id, Get).await
    }

    /// Every workspace, ordered by creation time.
    pub async fn list(&self) -> Vec<WorkspaceView> {
        let mut views: Vec<WorkspaceView> = join_all(self.ids().into_iter().map(|id| self.get(id)))
            .await
            .into_iter()
            .flatten()
            .collect();
        views.sort_by_key(|v| (v.created_at, v.id));
        views
    }

    /// Live inspection of one actor.
    pub async fn inspect(&self, id: WorkspaceId) -> Result<ActorView, ActorError> {
        self.ask(id, Inspect).await
    }

    /// Live inspection of every actor.
    pub async fn inspect_all(&self) -> Vec<ActorView> {
        let mut views: Vec<ActorView> = join_all(self.ids().into_iter().map(|id| self.inspect(id)))
            .await
            .into_iter()
            .flatten()
            .collect();
        views.sort_by_key(|v| v.id);
        views
    }

    /// Events of a workspace with `seq > after`.
    pub async fn events(
        &self,
        id: WorkspaceId,
        after: i64,
        limit: i64,
    ) -> Result<Vec<EventRecord>, ActorError> {
        if !self.inner.actors.contains(id) {
            return Err(ActorError::NotFound(id));
        }
        self.inner
            .deps
            .store
            .events(id, after, limit)
            .await
            .map_err(|e| ActorError::Store(e.to_string()))
    }

    /// The output of a workspace's instance (see [`Provider::logs`]), from the provider the
    /// workspace is on. Errors: `NotFound` for no such workspace, `OutputGone` for a
    /// generation whose output the provider no longer has, `Provider` when it cannot be read.
    pub async fn logs(&self, id: WorkspaceId, query: LogQuery) -> Result<LogStream, ActorError> {
        let entry = self.inner.actors.get(id).ok_or(ActorError::NotFound(id))?;
        let provider = self
            .inner
            .deps
            .providers
            .get(&entry.provider)
            .cloned()
            .ok_or_else(|| ActorError::UnknownProvider(entry.provider.to_string()))?;
        provider.logs(id, query).await.map_err(|e| match e {
            ProviderError::OutputGone(reason) => ActorError::OutputGone(reason),
            other => ActorError::Provider(other.to_string()),
        })
    }

    /// A live feed of committed events (all workspaces).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<EventRecord>> {
        self.inner.deps.bus.subscribe()
    }

    /// How many workspace actors this daemon runs.
    pub fn actor_count(&self) -> usize {
        self.inner.actors.len()
    }

    /// Whether the workspace exists.
    pub fn contains(&self, id: WorkspaceId) -> bool {
        self.inner.actors.contains(id)
    }

    /// Names of the configured providers.
    pub fn provider_names(&self) -> Vec<String> {
        self.inner
            .deps
            .providers
            .names()
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    /// Whether the daemon can serve lifecycle intents (store reachable, not shutting down).
    pub async fn ready(&self) -> Result<(), ActorError> {
        if self.inner.shutting_down.load(Ordering::Acquire) {
            return Err(ActorError::ShuttingDown);
        }
        self.inner
            .deps
            .store
            .ping()
            .await
            .map_err(|e| ActorError::Store(e.to_string()))
    }

    /// Number of workspaces by phase name.
    pub async fn census(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for view in self.list().await {
            *counts.entry(view.phase.as_str()).or_insert(0) += 1;
        }
        counts
    }

    /// Stops accepting intents and waits, at most `grace`, until no operation is in flight
    /// and every commit has settled. Cycles still running after `grace` are recovered at
    /// the next start from what was committed.
    pub async fn shutdown(&self, grace: Duration) {
        self.begin_shutdown();
        let entries = self.inner.actors.entries();
        let all = join_all(entries.iter().map(|e| e.addr.send(Shutdown)));
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(?grace, "shutdown grace elapsed with operations in flight; they will be recovered at the next start");
        }
    }

    /// Refuses new creates and tells long-lived streams to end (first step of shutdown, so
    /// that draining HTTP connections does not wait for event streams).
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Release);
        self.inner.closing.send_replace(true);
    }

    /// Becomes `true` once shutdown begins.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.inner.closing.subscribe()
    }

    /// Starts one probe actor per provider, probing every `interval`, and, for providers that
    /// report deaths as they happen, a follower that turns each into a dead report at once.
    pub fn start_probes(&self, interval: Duration) {
        for provider in self.inner.deps.providers.iter() {
            if let Some(deaths) = provider.deaths() {
                let name = self.inner.actors.provider_name(provider.name());
                actix::spawn(follow_deaths(self.inner.actors.clone(), name, deaths));
            }
            let prober = Prober::new(
                self.inner.actors.clone(),
                provider.clone(),
                interval,
                self.closing(),
            );
            match self.inner.arbiters.first() {
                Some(arbiter) => {
                    Prober::start_in_arbiter(arbiter, move |_| prober);
                }
                None => {
                    prober.start();
                }
            }
        }
    }

    fn ids(&self) -> Vec<WorkspaceId> {
        self.inner.actors.ids()
    }

    /// Starts a fresh actor for `id` from the store, after its predecessor stopped.
    async fn respawn(&self, id: WorkspaceId, restarts: u32) {
        let mut delay = Duration::from_millis(100);
        while !self.inner.shutting_down.load(Ordering::Acquire) {
            match self.inner.deps.store.load(id).await {
                Ok(Some(record)) => {
                    let live = match self.inner.deps.providers.get(&record.spec.provider) {
                        Some(p) => match p.liveness(id).await {
                            Ok(liveness) => live_generation(liveness),
                            Err(_) => assumed_live(&record.state),
                        },
                        None => None,
                    };
                    self.spawn(record, Origin::Restored { live }, restarts);
                    tracing::debug!(workspace = %id, restarts, "workspace actor restarted from the store");
                    return;
                }
                Ok(None) => {
                    self.inner.actors.remove(id);
                    return;
                }
                Err(e) => {
                    tracing::warn!(workspace = %id, error = %e, "cannot reload workspace; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}

/// What a provider that cannot be asked is assumed to have: the instance last recorded up.
fn assumed_live(state: &MachineState) -> Option<Generation> {
    (state.observed_generation.0 > 0).then_some(state.observed_generation)
}

/// Carries out what actors tell their supervisor, until the registry is gone.
async fn supervise(registry: Weak<Inner>, mut notes: mpsc::UnboundedReceiver<SupervisorNote>) {
    while let Some(note) = notes.recv().await {
        let Some(inner) = registry.upgrade() else {
            return;
        };
        match note {
            SupervisorNote::ProviderChanged { id, provider } => {
                inner.actors.set_provider(id, &provider);
            }
            SupervisorNote::Purged { id, addr } => {
                // Its output goes first, on every provider it may have run on, so that a
                // delete answered as done left none behind.
                actix::spawn(async move {
                    join_all(inner.deps.providers.iter().map(|p| p.forget_logs(id))).await;
                    inner.actors.forget(id, &addr);
                    inner.purged.send_modify(|n| *n += 1);
                });
            }
            SupervisorNote::Crashed {
                id,
                restarts,
                settled,
            } => {
                let registry = Registry { inner };
                actix::spawn(async move {
                    let _ = settled.await;
                    registry.respawn(id, restarts).await;
                });
            }
        }
    }
}

/// An actor's answer to an intent, once the commit it rests on is durable.
async fn durable(
    decided: Result<(IntentReply, Option<Commit>), ActorError>,
) -> Result<IntentReply, ActorError> {
    let (reply, commit) = decided?;
    if let Some(commit) = commit {
        commit.await.map_err(ActorError::Store)?;
    }
    Ok(reply)
}
